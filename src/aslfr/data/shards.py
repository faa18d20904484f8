"""The prepared dataset: one memory-mapped float32 array per source file plus a metadata table.

Layout of a prepared directory:
    shards/<file_id>.npy        float32 [rows * 200]: the seed's 200 columns of the source file's
                                rows as sequence blocks: the sequence at row offset r with n
                                frames is [r * 200:(r + n) * 200], its [200, n] columns one after
                                the other (`block_rows`); a skipped sequence's block is unreferenced
    shards/<file_id>.meta.parquet  one row per sequence (see METADATA_FIELDS), with its row offset
    shards/<file_id>.all.npy    with `prepare --landmarks all`: all 1,629 columns (LANDMARK_COLUMNS:
                                543 landmarks' x, then y, then z) of the same rows, as sequence
                                blocks at the same row offsets
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

import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aslfr.features import rows_to_coords
from aslfr.landmarks import LANDMARK_COLUMNS, SELECTED_COLUMNS
from aslfr.messages import first_line

N_COLUMNS = len(SELECTED_COLUMNS)
N_ALL = len(LANDMARK_COLUMNS)

METADATA_FIELDS = ("sequence_id", "participant_id", "file_id", "phrase", "n_frames",
                   "n_right_hand_frames", "n_left_hand_frames", "source", "offset")


class ShardDataset:
    """Random access to prepared sequences: `coords(i)` is [T, 100, 2] float32 with NaNs."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        meta_path = self.root / "metadata.parquet"
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path}: not found; run 'aslfr prepare' first")
        try:
            table = pq.read_table(meta_path)
        except (OSError, pa.ArrowException) as e:
            raise FileNotFoundError(f"{meta_path}: unreadable ({first_line(e)}); run 'aslfr prepare' again") from None
        missing = [c for c in METADATA_FIELDS if c not in table.column_names]
        if missing:
            raise FileNotFoundError(f"{meta_path}: no column(s) {', '.join(missing)}: not written by 'aslfr prepare'")
        self.meta = {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}
        self.phrases: list[str] = table.column("phrase").to_pylist()
        self._maps: dict[int, np.ndarray] = {}
        self._all_maps: dict[int, np.ndarray] = {}  # the all-landmark shards (`--landmarks all`)
        self.all_landmarks = (prepared_options(self.root) or {}).get("landmarks") == "all"
        every = [f"shards/{f}.all.npy" for f in np.unique(self.meta["file_id"])] if self.all_landmarks else []
        for name in ["stats.npz"] + [f"shards/{f}.npy" for f in np.unique(self.meta["file_id"])] + every:
            if not (self.root / name).is_file():  # found now, not in a DataLoader worker mid-epoch
                raise FileNotFoundError(f"{self.root / name}: missing from the prepared directory; "
                                        f"run 'aslfr prepare' again into it to restore it")
        self._check_shard_sizes()

    def _check_shard_sizes(self) -> None:
        """Every shard holds the rows its sequences need, checked from the .npy headers and file
        sizes (no data read): found now, with the file named, not as a DataLoader worker's
        traceback mid-epoch."""
        file_ids = self.meta["file_id"]
        ends = self.meta["offset"].astype(np.int64) + self.meta["n_frames"].astype(np.int64)
        shards = [(f"{fid}.npy", fid, N_COLUMNS) for fid in np.unique(file_ids)]
        if self.all_landmarks:
            shards += [(f"{fid}.all.npy", fid, N_ALL) for fid in np.unique(file_ids)]
        for name, fid, n_cols in shards:
            path = self.root / "shards" / name
            try:
                with open(path, "rb") as f:
                    version = np.lib.format.read_magic(f)
                    read_header = (np.lib.format.read_array_header_1_0 if version == (1, 0)
                                   else np.lib.format.read_array_header_2_0)
                    shape, _, dtype = read_header(f)
                    header = f.tell()
            except (OSError, ValueError) as e:
                raise ValueError(f"{path}: not a readable shard ({first_line(e)}); run 'aslfr prepare' again") from None
            count = int(np.prod(shape)) if shape else 1
            rows = shape[0] if len(shape) == 2 else count // n_cols  # the earlier row-major layout, or blocks
            needed = int(ends[file_ids == fid].max())
            if path.stat().st_size < header + count * np.dtype(dtype).itemsize or rows < needed:
                raise ValueError(f"{path}: cut off ({path.stat().st_size} bytes, {rows} rows for sequences that need "
                                 f"{needed}); run 'aslfr prepare' again into the directory to restore it")

    def __len__(self) -> int:
        return len(self.phrases)

    def _shard(self, file_id: int) -> np.ndarray:
        arr = self._maps.get(file_id)
        if arr is None:
            arr = np.load(self.root / "shards" / f"{file_id}.npy", mmap_mode="r")
            self._maps[file_id] = arr
        return arr

    def rows(self, i: int) -> np.ndarray:
        """[T, 200] selected columns of sample i (a new array)."""
        shard, start, n = self._locate(i)
        if shard.ndim == 2:  # the earlier row-major layout
            return np.array(shard[start:start + n])
        return block_rows(shard, start, n)

    def coords(self, i: int) -> np.ndarray:
        """[T, 100, 2] coordinates of sample i (a new, C-contiguous array, as the training loader
        wants it)."""
        shard, start, n = self._locate(i)
        if shard.ndim == 2:  # the earlier row-major layout
            return np.ascontiguousarray(rows_to_coords(shard[start:start + n]))
        return block_coords(shard, start, n)

    def require_all_landmarks(self) -> None:
        """One line, where a network needs every landmark and the directory has only the seed's."""
        if not self.all_landmarks:
            raise ValueError(f"{self.root}: prepared with the seed's 100 landmarks only; this network reads all 543 "
                             f"(x, y, z): prepare with --landmarks all")

    def landmarks(self, i: int) -> np.ndarray:
        """[T, 543, 3] x, y, z of every landmark of sample i, NaN where not detected (a new array);
        only in a directory prepared with `--landmarks all`."""
        self.require_all_landmarks()
        fid, start, n = int(self.meta["file_id"][i]), int(self.meta["offset"][i]), int(self.meta["n_frames"][i])
        arr = self._all_maps.get(fid)
        if arr is None:
            arr = np.load(self.root / "shards" / f"{fid}.all.npy", mmap_mode="r")
            self._all_maps[fid] = arr
        block = np.array(arr[start * N_ALL:(start + n) * N_ALL]).reshape(3, N_ALL // 3, n)
        return np.ascontiguousarray(block.transpose(2, 1, 0))

    def _locate(self, i: int) -> tuple[np.ndarray, int, int]:
        """(the memory-mapped shard, row offset, frames) of sample i."""
        return self._shard(int(self.meta["file_id"][i])), int(self.meta["offset"][i]), int(self.meta["n_frames"][i])

    @property
    def charmap(self):  # noqa: ANN201 - a CharacterMap
        return prepared_charmap(self.root)

    def stats(self) -> tuple[np.ndarray, np.ndarray]:
        """The normalisation statistics, checked: float arrays `mean` and `std` of one value per
        feature, finite (read as data: a file holding Python objects is refused, not unpickled)."""
        from aslfr.features import N_FEATURES

        path = self.root / "stats.npz"
        if not zipfile.is_zipfile(path):  # np.load would take any other bytes for a pickle
            raise ValueError(f"{path}: unreadable (not an .npz archive); run 'aslfr prepare' again")
        try:
            with np.load(path, allow_pickle=False) as d:
                missing = [k for k in ("mean", "std") if k not in d.files]
                if missing:
                    raise ValueError(f"{path}: no {' or '.join(missing)} array; run 'aslfr prepare' again")
                mean, std = d["mean"], d["std"]
        except ValueError as e:
            if "allow_pickle" in str(e):
                raise ValueError(f"{path}: holds Python objects, not float arrays; refused (it is read as data "
                                 f"only); run 'aslfr prepare' again") from None
            raise
        except (OSError, EOFError, zipfile.BadZipFile) as e:
            raise ValueError(f"{path}: unreadable ({first_line(e)}); run 'aslfr prepare' again") from None
        for name, a in (("mean", mean), ("std", std)):
            if a.shape != (N_FEATURES,) or a.dtype.kind != "f" or not np.isfinite(a).all():
                raise ValueError(f"{path}: '{name}' is {a.dtype} {list(a.shape)}"
                                 f"{'' if a.dtype.kind != 'f' or np.isfinite(a).all() else ' with non-finite values'}; "
                                 f"expected {N_FEATURES} finite floats; run 'aslfr prepare' again")
        return mean, std


def prepared_options(root: Path) -> dict | None:
    """The options a directory was prepared with (`options.json`); None where it has none."""
    import json

    path = Path(root) / "options.json"
    if not path.is_file():
        return None
    try:
        found = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, UnicodeDecodeError):
        found = None
    if not isinstance(found, dict):
        from aslfr.data.kaggle import DataError

        raise DataError(f"{path}: unreadable; prepare into a new directory, or delete {root} to start over")
    return found


def prepared_charmap(root: Path):  # noqa: ANN201 - a CharacterMap
    """The character map a directory was prepared with (`characters.json`; the competition's map
    for directories prepared before maps could be chosen)."""
    from aslfr.vocab import COMPETITION, CharacterMap

    path = Path(root) / "characters.json"
    return CharacterMap.load(path) if path.is_file() else COMPETITION


def block_rows(blocks: np.ndarray, start: int, n: int, n_cols: int = N_COLUMNS) -> np.ndarray:
    """The [n, n_cols] rows of the sequence block at row offset `start` (a new array)."""
    block = np.array(blocks[start * n_cols:(start + n) * n_cols])  # one sequential read of the map first:
    return np.ascontiguousarray(block.reshape(n_cols, n).T)           # the transpose then runs in cache


def block_coords(blocks: np.ndarray, start: int, n: int) -> np.ndarray:
    """`rows_to_coords` of `block_rows`, [n, 100, 2] C-contiguous, with one strided copy per axis
    out of the block read sequentially (about 3x faster than the row-major layout's
    [n, 2, 100] -> [n, 100, 2] copy, `benchmarks/shard_read.py`)."""
    block = np.array(blocks[start * N_COLUMNS:(start + n) * N_COLUMNS]).reshape(2, N_COLUMNS // 2, n)
    out = np.empty((n, N_COLUMNS // 2, 2), np.float32)
    out[:, :, 0] = block[0].T
    out[:, :, 1] = block[1].T
    return out


def to_blocks(sequences: list[np.ndarray], n_cols: int = N_COLUMNS) -> np.ndarray:
    """Sequences given as [n_i, n_cols] rows -> one float32 array of their blocks, in order (the
    i-th at row offset n_0 + ... + n_(i-1))."""
    if not sequences:
        return np.zeros(0, np.float32)
    return np.concatenate([np.asarray(s, np.float32).reshape(-1, n_cols).T.ravel() for s in sequences])
