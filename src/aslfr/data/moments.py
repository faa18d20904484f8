"""Global normalisation statistics (SEED-SPEC 2.2) from per-sequence sufficient statistics.

The 600 features of SEED-SPEC section 4 are, per sequence and axis, an affine map of the raw
coordinates, x' = (x - centre) / scale, and the 1- and 2-frame differences of x'. So their
NaN-aware count, sum and sum of squares follow exactly from nine raw sums per sequence and
column: the count, sum and sum of squares of the coordinates, and of their 1- and 2-frame
differences over frame pairs where both ends are detected. With S1, S2 the sums of x - centre
and its square (expanded from the raw sums in float64):

    sum x'   = S1 / scale          sum x'^2  = S2 / scale^2
    sum dx'  = D1 / scale          sum dx'^2 = Q1 / scale^2   (and so for the 2-frame difference)

with scale^2 = (sum over the axis's 100 columns of S2) / (their count), the feature code's own
definition, and the centre the mean of the centre landmark, itself from the raw sums. The last
frame (last two frames) of each sequence has a difference of 0 in the features, which counts as
a valid value. A sequence axis whose scale is 0 or undefined has no finite x' and no finite
difference except those zeros.

One compiled pass over each sequence's columns (`kernels.sums_kernel`, numba, no GIL, so a
file's sequences are split over threads) computes the raw sums in float64, instead of
materialising the [rows, 600] features in torch and reducing them (`benchmarks/prepare.py`).
`tests/test_moments.py` pins the result to `aslfr.features.landmark_features`, which training
and export use.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from aslfr.data.kernels import N_SUMS, in_parts, sums_kernel
from aslfr.data.shards import N_COLUMNS
from aslfr.files import save_npz
from aslfr.features import N_FEATURES
from aslfr.landmarks import CENTRE_POINT, N_SELECTED, NODE_ORDER

_LIP = int(CENTRE_POINT)  # the centre landmark's index among the 100 selected ones


def sequence_sums(blocks: np.ndarray, starts: np.ndarray, lengths: np.ndarray,
                  threads: int = 1, n_cols: int = N_COLUMNS) -> np.ndarray:
    """[n, 9, n_cols] float64 raw sums of sequence i, the block at row offset starts[i] with
    lengths[i] frames of `blocks` (the shard layout, `aslfr.data.shards`; NaN where not
    detected): for channel c in (value, 1-frame difference, 2-frame difference), index 3c is the
    count of valid values, 3c+1 their sum and 3c+2 their sum of squares. One compiled pass
    (`kernels.sums_kernel`) on `threads` threads; sequences are summed independently, so any
    split over threads gives the same numbers."""
    blocks = np.ascontiguousarray(blocks, dtype=np.float32).reshape(-1)
    starts = np.asarray(starts, np.int64)
    lengths = np.asarray(lengths, np.int64)
    out = np.zeros((len(starts), N_SUMS, n_cols), np.float64)
    in_parts(lambda a, b: sums_kernel(blocks, starts, lengths, n_cols, out, a, b), lengths, threads)
    return out


class FeatureMoments:
    """NaN-aware count, sum and sum of squares of the 600 features over many sequences, float64."""

    def __init__(self) -> None:
        self.count = np.zeros(N_FEATURES, np.float64)
        self.total = np.zeros(N_FEATURES, np.float64)
        self.total_sq = np.zeros(N_FEATURES, np.float64)

    def add_sums(self, sums: np.ndarray, lengths: np.ndarray) -> None:
        """Add sequences given by their `sequence_sums` rows and frame counts."""
        n = len(sums)
        if n == 0:
            return
        lengths = np.asarray(lengths, np.float64)
        s1, s2 = _centred(sums)
        with np.errstate(invalid="ignore", divide="ignore"):
            scale = np.sqrt(s2.sum(-1) / _by_axis(sums[:, 0]).sum(-1))  # [n, 2]
        usable = np.isfinite(scale) & (scale > 0)
        weight = np.where(usable, 1.0 / np.where(usable, scale, 1.0), 0.0)  # [n, 2]: 1 / scale, or 0
        keep = usable.astype(np.float64)
        count, total, total_sq = (np.zeros((3, 2 * N_SELECTED)) for _ in range(3))
        for c in range(3):
            first, second = (s1, s2) if c == 0 else (_by_axis(sums[:, 3 * c + 1]), _by_axis(sums[:, 3 * c + 2]))
            edge_zeros = np.minimum(lengths, c).sum()  # differences past the end are 0, not NaN
            count[c] = np.einsum("na,naj->aj", keep, _by_axis(sums[:, 3 * c])).reshape(-1) + edge_zeros
            total[c] = np.einsum("na,naj->aj", weight, first).reshape(-1)
            total_sq[c] = np.einsum("na,naj->aj", weight ** 2, second).reshape(-1)
        self.count += _feature_order(count)
        self.total += _feature_order(total)
        self.total_sq += _feature_order(total_sq)

    def merge(self, other: "FeatureMoments") -> None:
        self.count += other.count
        self.total += other.total
        self.total_sq += other.total_sq

    def save(self, path: Path) -> None:
        save_npz(path, count=self.count, total=self.total, total_sq=self.total_sq)

    @classmethod
    def load(cls, path: Path) -> "FeatureMoments":
        m = cls()
        with np.load(path) as d:
            m.count, m.total, m.total_sq = d["count"], d["total"], d["total_sq"]
        return m

    def mean_std(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and population std; a feature never seen gets mean 0, std 1."""
        n = np.maximum(self.count, 1)
        mean = self.total / n
        var = np.maximum(self.total_sq / n - mean ** 2, 0.0)
        std = np.sqrt(var)
        mean = np.where(self.count > 0, mean, 0.0)
        std = np.where((self.count > 0) & (std > 0), std, 1.0)
        return mean.astype(np.float32), std.astype(np.float32)


def _by_axis(columns: np.ndarray) -> np.ndarray:
    """[n, 200 columns (100 x, 100 y)] -> [n, 2 axes, 100] (a view)."""
    return columns.reshape(len(columns), 2, N_SELECTED)


def _centred(sums: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Raw sums -> the sum and sum of squares of x - centre, each [n, 2 axes, 100], the centre
    being the NaN-aware mean of the centre landmark per sequence and axis, 0.5 where it is never
    detected (SEED-SPEC 4.1). In float64 the expansion loses nothing that matters (values near
    0.5, spreads near 0.1: ~1e-14). The differences do not depend on the centre."""
    lip = sums[:, :, [_LIP, N_SELECTED + _LIP]]  # [n, 9, 2]
    with np.errstate(invalid="ignore", divide="ignore"):
        centre = np.where(lip[:, 0] > 0, lip[:, 1] / lip[:, 0], 0.5)  # [n, 2]
    # the feature code centres in float32
    centre = centre.astype(np.float32).astype(np.float64)[:, :, None]  # [n, 2, 1]
    n0, s1, s2 = _by_axis(sums[:, 0]), _by_axis(sums[:, 1]), _by_axis(sums[:, 2])
    return s1 - n0 * centre, s2 - 2 * centre * s1 + n0 * centre ** 2


def _feature_order(by_column: np.ndarray) -> np.ndarray:
    """[3 channels, 200 columns (100 x, 100 y)] -> [600] with index node*6 + [x, y, dx, dy, dx2, dy2]."""
    out = np.empty((N_SELECTED, 3, 2))
    out[:, :, 0] = by_column[:, :N_SELECTED][:, NODE_ORDER].T
    out[:, :, 1] = by_column[:, N_SELECTED:][:, NODE_ORDER].T
    return out.reshape(N_FEATURES)
