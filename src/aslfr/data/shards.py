"""The prepared dataset: one memory-mapped float32 array per source file plus a metadata table.

Layout of a prepared directory:
    shards/<file_id>.npy        float32 [rows * 200]: the seed's 200 columns of the source file's
                                rows as sequence blocks: the sequence at row offset r with n
                                frames is [r * 200:(r + n) * 200], its [200, n] columns one after
                                the other (`block_rows`); a skipped sequence's block is unreferenced
    shards/<file_id>.meta.parquet  one row per sequence (see METADATA_FIELDS), with its row offset
    shards/<file_id>.stats.npz  NaN-aware float64 count / sum / sum of squares of the 600 features
                                (aslfr.data.moments)
    shards/<file_id>.done.json  written last: the file is finished (skip counts inside)
    metadata.parquet            all sequences (the union of the per-file tables)
    stats.npz                   mean and std (600,) over the training files (SEED-SPEC 2.2)
Any sample is read in O(1): a slice of a memory map, transposed.

Sequence blocks, not row-major rows, because the parquet files are columns: each column's run
of a sequence is one contiguous copy, and the statistics' sums run along contiguous columns
(`benchmarks/prepare.py`). Shards of the earlier row-major layout ([rows, 200]) still read.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aslfr.features import rows_to_coords
from aslfr.landmarks import SELECTED_COLUMNS

N_COLUMNS = len(SELECTED_COLUMNS)

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
        shard = self._shard(int(self.meta["file_id"][i]))
        if shard.ndim == 2:  # the earlier row-major layout
            return np.array(shard[start:start + n])
        return block_rows(shard, start, n)

    def coords(self, i: int) -> np.ndarray:
        """[T, 100, 2] coordinates of sample i (a new array); from a sequence block, one
        transposing copy and C-contiguous, as the training loader wants it."""
        start, n = int(self.meta["offset"][i]), int(self.meta["n_frames"][i])
        shard = self._shard(int(self.meta["file_id"][i]))
        if shard.ndim == 2:  # the earlier row-major layout
            return rows_to_coords(np.array(shard[start:start + n]))
        block = np.array(shard[start * N_COLUMNS:(start + n) * N_COLUMNS]).reshape(2, N_COLUMNS // 2, n)
        out = np.empty((n, N_COLUMNS // 2, 2), np.float32)
        out[:, :, 0] = block[0].T  # one strided copy per axis: ~5x faster than numpy's
        out[:, :, 1] = block[1].T  # transposing copy of the whole [2, 100, n] block
        return out

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        with np.load(self.root / "stats.npz") as d:
            return d["mean"], d["std"]


def block_rows(blocks: np.ndarray, start: int, n: int, n_cols: int = N_COLUMNS) -> np.ndarray:
    """The [n, n_cols] rows of the sequence block at row offset `start` (a new array)."""
    block = np.array(blocks[start * n_cols:(start + n) * n_cols])  # one sequential read of the map first:
    return np.ascontiguousarray(block.reshape(n_cols, n).T)           # the transpose then runs in cache


def to_blocks(sequences: list[np.ndarray], n_cols: int = N_COLUMNS) -> np.ndarray:
    """Sequences given as [n_i, n_cols] rows -> one float32 array of their blocks, in order (the
    i-th at row offset n_0 + ... + n_(i-1))."""
    if not sequences:
        return np.zeros(0, np.float32)
    return np.concatenate([np.asarray(s, np.float32).reshape(-1, n_cols).T.ravel() for s in sequences])


def write_table(path: Path, columns: dict[str, list | np.ndarray]) -> None:
    table = pa.table({k: (v if isinstance(v, np.ndarray) else pa.array(v)) for k, v in columns.items()})
    atomic_write(path, lambda tmp: pq.write_table(table, tmp))


def save_npz(path: Path, **arrays: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:  # a file object: np.savez would append '.npz' to a name
            np.savez(f, **arrays)
    atomic_write(path, write)


class StreamedArray:
    """A 1-d array saved as `path` (.npy) part by part, in order, as its leading values become
    final, on a thread of its own: the writing overlaps the work that produces the rest. The
    file is written under a temporary name and appears under its own only when `finish` has
    written all of it; `discard` (or leaving a `with` block by an exception) removes it."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(f".{self.path.name}.tmp")
        self._thread = ThreadPoolExecutor(1)
        self._parts: list[Future] = []
        self._file = None
        self._written = 0

    def extend(self, array: np.ndarray, upto: int) -> None:
        """array[:upto] is final (array: the whole 1-d array, the same object at every call)."""
        if self._file is None:
            self._file = open(self._tmp, "wb")
            np.lib.format.write_array_header_1_0(self._file, np.lib.format.header_data_from_array_1_0(array))
        if upto > self._written:
            part = memoryview(array[self._written:upto]).cast("B")
            self._parts.append(self._thread.submit(self._file.write, part))
            self._written = upto

    def finish(self, array: np.ndarray) -> None:
        """Write the rest of `array`, wait for every part, and give the file its name."""
        self.extend(array, len(array))
        for part in self._parts:
            part.result()
        self._file.close()
        os.replace(self._tmp, self.path)
        self._thread.shutdown()

    def discard(self) -> None:
        self._thread.shutdown(wait=True)
        if self._file is not None:
            self._file.close()
        self._tmp.unlink(missing_ok=True)

    def __enter__(self) -> "StreamedArray":
        return self

    def __exit__(self, kind, *_) -> None:  # noqa: ANN001
        if kind is not None or self._tmp.exists():
            self.discard()


def write_json(path: Path, obj: object) -> None:
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(obj, indent=2, sort_keys=True) + "\n"))
