"""The prepared dataset: one memory-mapped float32 array per source file plus a metadata table.

Layout of a prepared directory:
    shards/<file_id>.npy        float32 [rows, 200]: the seed's 200 columns, sequences back to back
    shards/<file_id>.meta.parquet  one row per sequence (see METADATA_FIELDS), with its row offset
    shards/<file_id>.stats.npz  NaN-aware float64 count / sum / sum of squares of the 600 features
    shards/<file_id>.done.json  written last: the file is finished (skip counts inside)
    metadata.parquet            all sequences (the union of the per-file tables)
    stats.npz                   mean and std (600,) over the training files (SEED-SPEC 2.2)
Any sample is read in O(1): a slice of a memory map.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch

from aslfr.features import N_FEATURES, landmark_features, rows_to_coords
from aslfr.landmarks import SELECTED_COLUMNS

METADATA_FIELDS = ("sequence_id", "participant_id", "file_id", "phrase", "n_frames",
                   "n_right_hand_frames", "n_left_hand_frames", "source", "offset")
_RIGHT_WRIST_X = SELECTED_COLUMNS.index("x_right_hand_0")
_LEFT_WRIST_X = SELECTED_COLUMNS.index("x_left_hand_0")


def atomic_write(path: Path, write) -> None:  # noqa: ANN001 - write(tmp_path) callback
    """Write through a temporary name and rename, so a cut-off write never looks finished."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def hand_frame_counts(values: np.ndarray) -> tuple[int, int]:
    """Frames in which right / left hand landmark 0 is detected (SEED-SPEC 7.1)."""
    return (int(np.count_nonzero(~np.isnan(values[:, _RIGHT_WRIST_X]))),
            int(np.count_nonzero(~np.isnan(values[:, _LEFT_WRIST_X]))))


class FeatureMoments:
    """NaN-aware running count, sum and sum of squares of the 600 features, in float64."""

    def __init__(self) -> None:
        self.count = np.zeros(N_FEATURES, np.float64)
        self.total = np.zeros(N_FEATURES, np.float64)
        self.total_sq = np.zeros(N_FEATURES, np.float64)

    def add(self, values: np.ndarray, lengths: np.ndarray) -> None:
        """Add sequences laid end to end in `values` [rows, 200] with the given lengths."""
        segments = torch.repeat_interleave(torch.arange(len(lengths)), torch.as_tensor(lengths))
        feats = landmark_features(rows_to_coords(torch.from_numpy(values)), segments, len(lengths)).numpy()
        valid = np.isfinite(feats)
        feats = np.where(valid, feats, np.float32(0))
        # numpy's pairwise float64 reductions: several times faster than torch's column sums here
        self.count += valid.sum(0, dtype=np.float64)
        self.total += feats.sum(0, dtype=np.float64)
        self.total_sq += np.square(feats).sum(0, dtype=np.float64)

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


class ShardDataset:
    """Random access to prepared sequences: `coords(i)` is [T, 100, 2] float32 with NaNs."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_path = self.root / "metadata.parquet"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: not found; run 'aslfr prepare' first")
        table = pq.read_table(meta_path)
        self.meta = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        self.phrases: list[str] = table.column("phrase").to_pylist()
        self._maps: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return len(self.phrases)

    def _shard(self, file_id: int) -> np.ndarray:
        arr = self._maps.get(file_id)
        if arr is None:
            arr = np.load(self.root / "shards" / f"{file_id}.npy", mmap_mode="r")
            self._maps[file_id] = arr
        return arr

    def rows(self, i: int) -> np.ndarray:
        """[T, 200] selected columns of sample i."""
        start, n = int(self.meta["offset"][i]), int(self.meta["n_frames"][i])
        return np.array(self._shard(int(self.meta["file_id"][i]))[start:start + n])

    def coords(self, i: int) -> np.ndarray:
        return rows_to_coords(torch.from_numpy(self.rows(i))).numpy()

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.root / "stats.npz") as d:
            return d["mean"], d["std"]


def write_table(path: Path, columns: dict[str, list | np.ndarray]) -> None:
    table = pa.table({k: (v if isinstance(v, np.ndarray) else pa.array(v)) for k, v in columns.items()})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append '.npz' to a name
            np.savez(f, **arrays)
    atomic_write(path, write)


def save_npy(path: Path, array: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.save(f, array)
    atomic_write(path, write)


def write_json(path: Path, obj: object) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))
