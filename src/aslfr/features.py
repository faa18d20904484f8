"""Per-sample features (SEED-SPEC section 4): the one implementation used by statistics,
training, scoring and the exported model.

Written with tensor operations only: shifted frames come from clamped gathers plus a mask, NaN
handling from `where`, so the same code traces into ONNX with a dynamic time axis.
"""

from __future__ import annotations

import numpy as np
import torch

from aslfr.landmarks import CENTRE_POINT, N_SELECTED, NODE_ORDER

N_FEATURES = N_SELECTED * 6  # 600: per node [x, y, dx, dy, dx2, dy2]
_CENTRE_NODE = int(np.flatnonzero(NODE_ORDER == CENTRE_POINT)[0])
_NODE_ORDER = torch.as_tensor(NODE_ORDER)


def rows_to_coords(rows):  # noqa: ANN001, ANN201 - a torch tensor or a numpy array, the same kind back
    """[T, 200] selected columns (100 x, then 100 y) -> [T, 100, 2]: a view, for torch tensors
    and numpy arrays alike."""
    return rows.reshape(rows.shape[0], 2, N_SELECTED).swapaxes(1, 2)


def _nanmean(x: torch.Tensor) -> torch.Tensor:
    """NaN-aware mean over axes 0 and 1 of [T, K, 2] -> [2]; NaN where nothing is valid."""
    valid = ~torch.isnan(x)
    total = torch.where(valid, x, torch.zeros_like(x)).sum(1).sum(0)
    return total / valid.sum(1).to(x.dtype).sum(0)


def _shift(x: torch.Tensor, k: int) -> torch.Tensor:
    """x[t + k] - x[t], and 0 for the last k frames (all of them if T <= k)."""
    t = torch.arange(x.shape[0], device=x.device)
    ahead = torch.clamp(t + k, max=x.shape[0] - 1)
    diff = x.index_select(0, ahead) - x
    return torch.where((t + k < x.shape[0])[:, None, None], diff, torch.zeros_like(diff))


def landmark_features(coords: torch.Tensor) -> torch.Tensor:
    """[T, 100, 2] raw coordinates in selected-column order (NaN kept) -> [T, 600] features in
    node order, before resizing and global normalisation; NaN stays NaN. (`aslfr prepare`
    computes the features' global moments from per-sequence sums instead: data/moments.py,
    pinned to this function by tests/test_moments.py.)"""
    x = coords.index_select(1, _NODE_ORDER.to(coords.device))
    centre = _nanmean(x[:, _CENTRE_NODE:_CENTRE_NODE + 1])
    centre = torch.where(torch.isnan(centre), torch.full_like(centre, 0.5), centre)
    scale = torch.sqrt(_nanmean((x - centre) ** 2))
    x = (x - centre) / scale
    feats = torch.cat([x, _shift(x, 1), _shift(x, 2)], dim=-1)
    return feats.reshape(x.shape[0], N_FEATURES)


def resize_time(x: torch.Tensor, length: int) -> torch.Tensor:
    """Bilinear resize along axis 0 to `length` frames (half-pixel centres, no antialias, as
    tf.image.resize). A neighbour is used only where its weight is above 0, so a NaN frame
    does not leak into an output frame that does not need it. Resizing to the same length is
    exactly the identity. Positions come from tensor arithmetic, not Python numbers of the
    (dynamic) input length, so the code exports with a dynamic time axis."""
    n_in = torch.ones_like(x[:, 0]).sum()
    steps = torch.arange(length, device=x.device, dtype=torch.float32)
    n_out = torch.ones_like(steps).sum()
    pos = torch.clamp((steps + 0.5) * (n_in / n_out) - 0.5, min=0.0)
    lo = torch.floor(pos)
    w = (pos - lo)[:, None]
    last = (n_in - 1).to(torch.long)
    lo = torch.minimum(lo.long(), last)
    hi = torch.minimum(lo + 1, last)
    a, b = x.index_select(0, lo), x.index_select(0, hi)
    return torch.where(w > 0, a * (1 - w) + b * w, a)


def resized_length(feats: torch.Tensor, max_len: int) -> int:
    """min(T, max_len), computed from the data so that export keeps T dynamic."""
    n = int(torch.clamp(torch.ones_like(feats[:, 0]).sum(), max=max_len).to(torch.int64).item())
    torch._check(n >= 0)
    torch._check(n <= max_len)
    return n


def normalise(feats: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Global normalisation (SEED-SPEC 2.2), then anything not finite becomes 0."""
    out = (feats - mean) / std
    finite = torch.abs(out) <= torch.finfo(torch.float32).max  # isfinite, without IsInf (onnx2tf lacks it)
    return torch.where(finite, out, torch.zeros_like(out))


def sample_features(coords: torch.Tensor, mean: torch.Tensor, std: torch.Tensor,
                    max_len: int) -> torch.Tensor:
    """The whole of SEED-SPEC section 4 for one sample: [T, 100, 2] -> [min(T, max_len), 600]."""
    feats = landmark_features(coords)
    feats = resize_time(feats, resized_length(feats, max_len))  # the identity when T <= max_len
    return normalise(feats, mean, std)
