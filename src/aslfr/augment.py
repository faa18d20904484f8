"""Training augmentations on raw coordinates (SEED-SPEC section 5), in the seed's order.

Each takes and returns [T, 100, 2] float32 (selected-column order, NaN where undetected) and
draws from a numpy Generator; the trainer seeds one per (seed, epoch, sample), which makes the
augmented data independent of worker and process layout, so runs resume and scale exactly.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from aslfr.landmarks import FLIP_PERMUTATION


def resample(x: np.ndarray, rng: np.random.Generator, rate_range=(0.5, 1.5)) -> np.ndarray:
    """Stretch or squeeze time: new length int(rate * T) (at least 1); bilinear with odds 1/3,
    else bicubic or nearest."""
    t = len(x)
    new_t = max(1, int(rng.uniform(*rate_range) * t))
    mode = rng.choice(["bilinear", "bicubic", "nearest"], p=[1 / 3, 1 / 3, 1 / 3])
    src = torch.from_numpy(np.ascontiguousarray(x.reshape(t, -1).T))[None, :, :, None]  # [1, 200, T, 1]
    kwargs = {} if mode == "nearest" else {"align_corners": False}
    out = F.interpolate(src, size=(new_t, 1), mode=str(mode), **kwargs)
    return out[0, :, :, 0].T.reshape(new_t, *x.shape[1:]).numpy().astype(np.float32)


def flip(x: np.ndarray) -> np.ndarray:
    """Mirror horizontally and swap every left/right pair (hands, lips, nose, pose)."""
    out = x[:, FLIP_PERMUTATION].copy()
    out[..., 0] = 1.0 - out[..., 0]
    return out


def affine(x: np.ndarray, rng: np.random.Generator, scale=(0.8, 1.2), shear=(-0.15, 0.15),
           degrees=(-30.0, 30.0), shift=(-0.1, 0.1)) -> np.ndarray:
    """Scale; shear x or y (even odds) about (0.5, 0.5); rotate about (0.5, 0.5); shift both axes
    by one scalar. NaN stays NaN. The steps compose into one 2x2 matrix and one offset:
    rotate(shear(k x - c)) + c + shift = A x + (c - A' c + shift), with A = k R M, A' = R M."""
    k = rng.uniform(*scale)
    s = rng.uniform(*shear)
    m = np.array([[1.0, s], [0.0, 1.0]] if rng.random() < 0.5 else [[1.0, 0.0], [s, 1.0]])
    a = np.radians(rng.uniform(*degrees))
    r = np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])
    rm = r @ m
    offset = 0.5 - rm.sum(1) * 0.5 + rng.uniform(*shift)
    (a00, a01), (a10, a11) = (rm * k).astype(np.float32)
    px, py = x[..., 0], x[..., 1]
    out = np.empty_like(x, dtype=np.float32)
    out[..., 0] = a00 * px + a01 * py + np.float32(offset[0])
    out[..., 1] = a10 * px + a11 * py + np.float32(offset[1])
    return out


def temporal_mask(x: np.ndarray, rng: np.random.Generator, size=(0.2, 0.4)) -> np.ndarray:
    """Blank a window of int(T * U(size)) frames at a random offset, wrapping around."""
    t = len(x)
    n = int(t * rng.uniform(*size))
    out = x.copy()
    if n:
        out[(int(rng.integers(t)) + np.arange(n)) % t] = np.nan
    return out


def spatial_mask(x: np.ndarray, rng: np.random.Generator, size=(0.2, 0.4)) -> np.ndarray:
    """Blank the landmarks inside a random box (U(size) per axis, random offset, wrapping
    around the unit image)."""
    w = rng.uniform(*size, 2)
    o = rng.uniform(0, 1, 2)
    w, o = w.astype(np.float32), o.astype(np.float32)
    # NaN compares False: stays as it is
    dx, dy = x[..., 0] - o[0], x[..., 1] - o[1]
    inside = (dx - np.floor(dx) < w[0]) & (dy - np.floor(dy) < w[1])  # (x - o) mod 1 < w
    out = x.copy()
    out[inside] = np.nan
    return out


def augment(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The seed's chain with its probabilities."""
    if rng.random() < 0.8:
        x = resample(x, rng)
    if rng.random() < 0.5:
        x = flip(x)
    if rng.random() < 0.75:
        x = affine(x, rng)
    if rng.random() < 0.5:
        x = temporal_mask(x, rng)
    if rng.random() < 0.5:
        x = spatial_mask(x, rng)
    return x
