"""The 2nd place's training augmentations (SECOND-PLACE-SPEC 2), on all 543 landmarks: raw
[T, 543, 3] float32 (x, y, z; NaN where not detected), before `ctc_attention.preprocess`, in
its order: a temporal resample (p 0.8), a spatial affine (p 0.75), a spatial cut-out (p 0.5);
and the decoder-input token replacement.

Each draws from a numpy Generator that the trainer seeds per (seed, epoch, sample), so the
augmented data does not depend on workers or processes (as for the seed, `aslfr.augment`).
The resize is TensorFlow's `tf.image.resize` (half-pixel centres, no antialiasing), pinned to
TensorFlow itself by tests/test_second_place.py: bilinear as TF's kernel computes it; nearest
is PyTorch's `nearest-exact`; bicubic is Keys' kernel with a = -0.5 from TF's table of 1,024
steps, taps outside the sequence dropped and the rest renormalised, and a NaN reaches the
landmarks next to it (TF's kernel multiplies the zero-weight taps across the landmark axis too).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    if rng.uniform() < 0.8:
        x = resample(x, rng)
    if rng.uniform() < 0.75:
        x = affine(x, rng)
    if rng.uniform() < 0.5:
        x = cutout(x, rng)
    return x


def resample(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """New length int(U(0.5, 1.5) * T), at least 1: bilinear with p 0.33, else bicubic or nearest."""
    t = len(x)
    new = max(1, int(rng.uniform(0.5, 1.5) * t))
    if rng.uniform() < 0.33:
        method = "bilinear"
    else:
        method = "bicubic" if rng.uniform() < 0.5 else "nearest"
    return resize_time(x, new, method)


def resize_time(x: np.ndarray, new: int, method: str) -> np.ndarray:
    """[T, ...] -> [new, ...] along time, as `tf.image.resize` with height = time."""
    t = len(x)
    if t == 0:
        return x
    if method == "bicubic":
        return _bicubic(x, new)
    if method == "bilinear":
        return _bilinear(x, new)
    flat = torch.from_numpy(np.ascontiguousarray(x.reshape(t, -1).T))[None]  # [1, C, T]
    out = F.interpolate(flat, size=new, mode="nearest-exact")[0].T
    return out.reshape(new, *x.shape[1:]).numpy().astype(np.float32)


def _bilinear(x: np.ndarray, new: int) -> np.ndarray:
    """TF's resize_bilinear with half-pixel centres along time: position p = (i + 0.5) * T / new
    - 0.5, lower = max(floor(p), 0), upper = min(ceil(p), T - 1), lower + (upper - lower) *
    (p - floor(p)); at a whole position only that frame is read (a NaN beside it stays out)."""
    t = len(x)
    position = (np.arange(new, dtype=np.float32) + np.float32(0.5)) * np.float32(t / new) - np.float32(0.5)
    floor = np.floor(position)
    lower = np.maximum(floor.astype(np.int64), 0)
    upper = np.minimum(np.ceil(position).astype(np.int64), t - 1)
    lerp = (position - floor).astype(np.float32)[:, None, None]
    top, bottom = x[lower], x[upper]
    return (top + (bottom - top) * lerp).astype(np.float32)


def _keys_table(size: int = 1024) -> np.ndarray:
    """TF's bicubic weight table (float32): row i holds Keys' kernel (a = -0.5) at i / size
    and at 1 + i / size."""
    x = (np.arange(size + 1, dtype=np.float32) / np.float32(size)).astype(np.float32)
    near = ((np.float32(1.5) * x - np.float32(2.5)) * x) * x + np.float32(1.0)
    y = x + np.float32(1.0)
    far = ((np.float32(-0.5) * y + np.float32(2.5)) * y - np.float32(4.0)) * y + np.float32(2.0)
    return np.stack([near, far], 1).astype(np.float32)


_TABLE = _keys_table()


def _bicubic(x: np.ndarray, new: int) -> np.ndarray:
    """TF's resize_bicubic with half-pixel centres along time: source position
    (i + 0.5) * T / new - 0.5, four taps around it, the weights looked up in a table of 1,024
    steps; taps outside the sequence weigh 0 and the rest are renormalised."""
    t = len(x)
    # along the landmarks the kernel is the identity at whole positions, but its zero-weight taps
    # (landmarks i - 1, i + 1, i + 2, where they exist) still carry a NaN into landmark i
    nan = np.isnan(x).any(-1)                                                 # [T, 543]
    spread = nan.copy()
    spread[:, 1:] |= nan[:, :-1]
    spread[:, :-1] |= nan[:, 1:]
    spread[:, :-2] |= nan[:, 2:]
    x = np.where(spread[..., None], np.float32(np.nan), x).astype(np.float32)
    scale = np.float32(t / new)
    position = (np.arange(new, dtype=np.float32) + np.float32(0.5)) * scale - np.float32(0.5)
    base = np.floor(position).astype(np.int64)
    offset = np.rint((position - base.astype(np.float32)) * np.float32(1024)).astype(np.int64)
    w = np.stack([_TABLE[offset, 1], _TABLE[offset, 0], _TABLE[1024 - offset, 0], _TABLE[1024 - offset, 1]], 1)
    taps = base[:, None] + np.arange(-1, 3)[None]                             # [new, 4]
    inside = (taps >= 0) & (taps < t)
    w = np.where(inside, w, np.float32(0))
    edge = ~inside.all(1)
    w[edge] = w[edge] / w[edge].sum(1, keepdims=True)
    src = x[np.clip(taps, 0, t - 1)]                                          # [new, 4, 543, 3]
    out = np.zeros((new, *x.shape[1:]), np.float32)
    for k in range(4):  # every tap inside the sequence is multiplied, a zero weight included
        term = w[:, k, None, None] * src[:, k]
        out += np.where(inside[:, k, None, None], term, np.float32(0))
    return out


def affine(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Scale x, y and z by U(0.8, 1.2); shear x or y (even odds) by U(-0.15, 0.15); rotate by
    U(-30, 30) degrees about (0.5 + shear_y, 0.5 + shear_x); add one U(-0.1, 0.1) to x, y, z."""
    s = rng.uniform(0.8, 1.2)
    h = rng.uniform(-0.15, 0.15)
    shear_x, shear_y = (0.0, h) if rng.uniform() < 0.5 else (h, 0.0)
    theta = math.radians(rng.uniform(-30.0, 30.0))
    shift = rng.uniform(-0.1, 0.1)
    x = x * np.float32(s)
    px, py = x[..., 0], x[..., 1]
    px, py = px + shear_y * py, shear_x * px + py
    cx, cy = 0.5 + shear_y, 0.5 + shear_x
    c, sn = math.cos(theta), math.sin(theta)
    px, py = cx + (px - cx) * c - (py - cy) * sn, cy + (px - cx) * sn + (py - cy) * c
    out = np.stack([px, py, x[..., 2]], -1) + np.float32(shift)
    return out.astype(np.float32)


def cutout(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A square of side U(0.2, 0.4) at (U(0, 1), U(0, 1)): landmarks strictly inside it, tested
    in every frame, become NaN."""
    ox, oy = rng.uniform(0, 1), rng.uniform(0, 1)
    size = rng.uniform(0.2, 0.4)
    with np.errstate(invalid="ignore"):
        inside = (x[..., 0] > ox) & (x[..., 0] < ox + size) & (x[..., 1] > oy) & (x[..., 1] < oy + size)
    out = x.copy()
    out[inside] = np.nan
    return out


def replace_tokens(tokens: np.ndarray, rng: np.random.Generator, rate: float, n_characters: int,
                   fixed: tuple[int, ...]) -> np.ndarray:
    """Decoder input ids with ceil(rate * selectable) of the selectable positions (ids not in
    `fixed`: pad, SOS, EOS) chosen uniformly, each given a uniform id in 0..n_characters (pad
    included, or its own id again), as keras_nlp's MaskedLMMaskGenerator with random_token_rate 1."""
    selectable = np.flatnonzero(~np.isin(tokens, fixed))
    k = math.ceil(rate * len(selectable))
    out = tokens.copy()
    if k:
        chosen = rng.choice(selectable, size=k, replace=False)
        out[chosen] = rng.integers(0, n_characters + 1, size=k)
    return out


__all__ = ["affine", "augment", "cutout", "replace_tokens", "resample", "resize_time"]
