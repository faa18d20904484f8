"""Reading the competition's layout: metadata csv files and landmark parquet files.

Every check names the file (and sequence) at fault, because on the real 170 GB dataset a bare
traceback from deep inside pyarrow is no help.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aslfr.landmarks import SELECTED_COLUMNS

T = TypeVar("T")

METADATA_COLUMNS = ("path", "file_id", "sequence_id", "participant_id", "phrase")
METADATA_FILES = {"train": "train.csv", "supplemental": "supplemental_metadata.csv"}


class DataError(ValueError):
    """Input data that cannot be used as it is; the message names the file and the problem."""


@dataclass(frozen=True)
class SequenceInfo:
    path: str
    file_id: int
    sequence_id: int
    participant_id: int
    phrase: str
    source: str  # "train" or "supplemental"


def read_metadata(data_dir: str | Path, source: str = "train") -> list[SequenceInfo]:
    """Rows of train.csv or supplemental_metadata.csv, checked for columns and types."""
    path = Path(data_dir) / METADATA_FILES[source]
    if not path.is_file():
        raise DataError(f"{path}: metadata file not found (is {Path(data_dir)} a Kaggle-layout directory?)")
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        missing = [c for c in METADATA_COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
        rows = []
        for line, r in enumerate(reader, start=2):
            try:
                rows.append(SequenceInfo(r["path"], int(r["file_id"]), int(r["sequence_id"]),
                                         int(r["participant_id"]), r["phrase"], source))
            except (TypeError, ValueError):
                raise DataError(f"{path}, line {line}: file_id, sequence_id and participant_id must be "
                                f"integers, got {r['file_id']!r}, {r['sequence_id']!r}, {r['participant_id']!r}") from None
    seen: set[int] = set()
    for r in rows:
        if r.sequence_id in seen:
            raise DataError(f"{path}: sequence_id {r.sequence_id} is listed twice")
        seen.add(r.sequence_id)
    return rows


def check_landmark_schema(path: Path, columns: list[str] = SELECTED_COLUMNS) -> None:
    """Fail early, naming the file, if columns are missing or not floating point."""
    try:
        schema = pq.read_schema(path)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    _check_schema(path, schema, columns)


def _check_schema(path: Path, schema: pa.Schema, columns: list[str]) -> None:
    names = set(schema.names)
    for required in ("sequence_id", "frame"):
        if required not in names:
            raise DataError(f"{path}: no '{required}' column")
    missing = [c for c in columns if c not in names]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5 else "")
        raise DataError(f"{path}: missing landmark column(s) {shown}")
    for c in columns:
        t = schema.field(c).type
        if not pa.types.is_floating(t):
            raise DataError(f"{path}: column {c} has type {t}, expected float32")
    if not pa.types.is_integer(schema.field("sequence_id").type):
        raise DataError(f"{path}: column sequence_id has type {schema.field('sequence_id').type}, expected an integer")


def read_landmarks(path: Path, columns: list[str] = SELECTED_COLUMNS,
                   threads: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read only `columns` of one landmark file.

    Returns (sequence_ids, frames, values[rows, len(columns)] float32), each sequence one
    contiguous block with its frames in order: the file's own row order when it already is so
    (the competition's files are), else rows sorted by (sequence_id, frame).

    The file is decoded piece by piece (row groups, or batches of one big row group) on
    pyarrow's threads, one piece ahead, while a compiled loop on `threads` threads copies the
    pieces already decoded straight into the row-major array.
    """
    from aslfr.data.kernels import gather  # numba: imported only where landmarks are read

    try:
        source = pq.ParquetFile(path)  # the footer is parsed once, for the check and the read
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    _check_schema(path, source.schema_arrow, columns)
    try:
        keys = source.read(columns=["sequence_id", "frame"], use_threads=True)
        seq = keys.column(0).to_numpy()
        frame = keys.column(1).to_numpy()
        if _grouped(seq, frame):
            pieces: Iterator[pa.Table | pa.RecordBatch] = _read_ahead(_pieces(source, columns))
        else:
            order = np.lexsort((frame, seq))
            seq, frame = seq[order], frame[order]
            pieces = iter([source.read(columns=columns, use_threads=True).take(order)])
        values = np.empty((len(seq), len(columns)), dtype=np.float32)
        row = 0
        for piece in pieces:
            for batch in (piece.to_batches() if isinstance(piece, pa.Table) else [piece]):
                n = batch.num_rows
                if row + n > len(values):
                    raise DataError(f"{path}: the landmark columns have more rows than sequence_id")
                # views of the buffers where possible (nulls become NaN; another float type is cast)
                cols = [np.asarray(batch.column(j).to_numpy(zero_copy_only=False), np.float32)
                        for j in range(batch.num_columns)]
                if n:
                    gather(cols, values, row, threads)
                row += n
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read landmarks ({e})") from None
    if row != len(values):
        raise DataError(f"{path}: {row} rows of landmarks read, {len(values)} of sequence_id")
    return seq, frame, values


def _pieces(source: pq.ParquetFile, columns: list[str]) -> Iterator[pa.Table | pa.RecordBatch]:
    if source.metadata.num_row_groups > 1:
        for k in range(source.metadata.num_row_groups):
            yield source.read_row_group(k, columns=columns, use_threads=True)
    else:
        yield from source.iter_batches(batch_size=65536, columns=columns, use_threads=True)


def _read_ahead(pieces: Iterator[T]) -> Iterator[T]:
    """The items of `pieces`, the next one produced on another thread while this one is used."""
    done = object()
    with ThreadPoolExecutor(1) as ahead:
        upcoming = ahead.submit(next, pieces, done)
        while (item := upcoming.result()) is not done:
            upcoming = ahead.submit(next, pieces, done)
            yield item


def _grouped(seq: np.ndarray, frame: np.ndarray) -> bool:
    """Each sequence's rows are one block, frames ascending within it (as the competition's
    files are): then the file's row order is kept, and nothing is copied."""
    same = seq[1:] == seq[:-1]
    run_starts = seq[np.concatenate([[True], ~same])] if len(seq) else seq
    return len(np.unique(run_starts)) == len(run_starts) and bool(np.all(frame[1:][same] >= frame[:-1][same]))


def split_sequences(seq: np.ndarray) -> dict[int, tuple[int, int]]:
    """sequence_id -> (start row, n rows) for rows grouped by sequence_id."""
    if len(seq) == 0:
        return {}
    bounds = np.flatnonzero(seq[1:] != seq[:-1]) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(seq)]])
    return {int(seq[s]): (int(s), int(e - s)) for s, e in zip(starts, ends)}
