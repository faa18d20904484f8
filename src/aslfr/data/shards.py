"""The prepared dataset: one memory-mapped float32 array per source file plus a metadata table.

Layout of a prepared directory:
    shards/<file_id>.npy        float32 [rows, 200]: the seed's 200 columns of the source file's rows,
                                each sequence one block (see `read_landmarks`); a skipped
                                sequence's rows are unreferenced
    shards/<file_id>.meta.parquet  one row per sequence (see METADATA_FIELDS), with its row offset
    shards/<file_id>.stats.npz  NaN-aware float64 count / sum / sum of squares of the 600 features
                                (aslfr.data.moments)
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

from aslfr.features import rows_to_coords

METADATA_FIELDS = ("sequence_id", "participant_id", "file_id", "phrase", "n_frames",
                   "n_right_hand_frames", "n_left_hand_frames", "source", "offset")


def atomic_write(path: Path, write) -> None:  # noqa: ANN001 - write(tmp_path) callback
    """Write through a temporary name and rename, so a cut-off write never looks finished."""
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


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
        return rows_to_coords(self.rows(i))

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
