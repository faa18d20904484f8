"""Reading the competition's layout: metadata csv files and landmark parquet files.

Every check names the file (and sequence) at fault, because on the real 170 GB dataset a bare
traceback from deep inside pyarrow is no help.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from aslfr.landmarks import SELECTED_COLUMNS

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


def dataset_charmap(data_dir: str | Path):  # noqa: ANN201 - a CharacterMap
    """A Kaggle-layout dataset's own character map (its character_to_prediction_index.json),
    else the competition's."""
    from aslfr.vocab import COMPETITION, CharacterMap

    path = Path(data_dir) / "character_to_prediction_index.json"
    return CharacterMap.load(path) if path.is_file() else COMPETITION


def csv_rows(path: Path, required: Sequence[str]) -> list[dict[str, str]]:
    """The rows of a UTF-8 csv file that must have the `required` columns (one line naming the
    file and what is missing otherwise)."""
    try:
        with open(path, newline="", encoding="utf-8") as f:
            reader = csv.DictReader(f)
            missing = [c for c in required if c not in (reader.fieldnames or [])]
            if missing:
                raise DataError(f"{path}: missing column(s) {', '.join(missing)}; found {reader.fieldnames}")
            return list(reader)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not UTF-8 text (byte {e.start}: {e.object[e.start:e.start + 1]!r}); save it as "
                        f"UTF-8") from None


def read_metadata(data_dir: str | Path, source: str = "train") -> list[SequenceInfo]:
    """Rows of train.csv or supplemental_metadata.csv, checked for columns and types."""
    path = Path(data_dir) / METADATA_FILES[source]
    if not path.is_file():
        raise DataError(f"{path}: metadata file not found (is {Path(data_dir)} a Kaggle-layout directory?)")
    rows = []
    for line, r in enumerate(csv_rows(path, METADATA_COLUMNS), start=2):
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
    for key in ("sequence_id", "frame"):
        if not pa.types.is_integer(schema.field(key).type):
            raise DataError(f"{path}: column {key} has type {schema.field(key).type}, expected an integer")


def read_landmarks(path: Path, columns: list[str] = SELECTED_COLUMNS,
                   threads: int = 1) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read only `columns` of one landmark file, as rows.

    Returns (sequence_ids, frames, values[rows, len(columns)] float32), each sequence one
    contiguous block with its frames in order: the file's own row order when it already is so
    (the competition's files are), else rows sorted by (sequence_id, frame).
    """
    from aslfr.data.kernels import gather  # numba: imported only where landmarks are read

    seq, frame, pieces = _landmark_pieces(path, columns)
    values = np.empty((len(seq), len(columns)), dtype=np.float32)
    for row, cols in pieces:
        gather(cols, values, row, threads)
    return seq, frame, values


@dataclass(frozen=True)
class SequenceBlocks:
    """The sequences of one landmark file in the shard layout (`aslfr.data.shards`)."""
    sequence_ids: np.ndarray  # [sequences]
    starts: np.ndarray        # [sequences] row offset of each, ascending
    lengths: np.ndarray       # [sequences] frames of each
    blocks: np.ndarray        # float32 [rows * len(columns)]: sequence s is [len(columns), lengths[s]]


def read_sequence_blocks(path: Path, columns: list[str] = SELECTED_COLUMNS, threads: int = 1) -> SequenceBlocks:
    """Read only `columns` of one landmark file, as sequence blocks: the rows in the order of
    `read_landmarks`, each sequence's columns one after the other."""
    from aslfr.data.kernels import copy_blocks

    seq, _, pieces = _landmark_pieces(path, columns)
    ids, starts, lengths = sequence_runs(seq)
    blocks = np.empty(len(seq) * len(columns), dtype=np.float32)
    for row, cols in pieces:
        copy_blocks(cols, blocks, row, starts, lengths, threads)
    return SequenceBlocks(ids, starts, lengths, blocks)


def _landmark_pieces(path: Path, columns: list[str]) -> tuple[np.ndarray, np.ndarray, Iterator[tuple[int, list[np.ndarray]]]]:
    """(sequence_ids, frames, pieces) of one landmark file, in the order `read_landmarks`
    describes; each piece is (first row, float32 columns) of one record batch.

    The file is decoded in one call, on all of pyarrow's threads, like a bare read: on the cores
    here that is faster than decoding row group by row group while the caller copies the one
    before, since both compete for the same cores (`benchmarks/README.md`)."""
    try:
        # the footer is parsed once, for the check and the read; the pages are read from a memory
        # map, not copied into buffers first (a bare read of these columns: 0.080 s against
        # 0.101 s without the map, `benchmarks/README.md`)
        source = pq.ParquetFile(path, memory_map=True)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: not a readable parquet file ({e})") from None
    _check_schema(path, source.schema_arrow, columns)
    try:
        table = source.read(columns=["sequence_id", "frame", *columns], use_threads=True)
        _check_keys(path, table)
        seq = table.column(0).to_numpy()
        frame = table.column(1).to_numpy()
        if not _grouped(seq, frame):
            order = np.lexsort((frame, seq))
            seq, frame = seq[order], frame[order]
            table = table.take(order)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read landmarks ({e})") from None
    twice = np.flatnonzero((seq[1:] == seq[:-1]) & (frame[1:] == frame[:-1]))
    if len(twice):  # a file written twice over, or two recordings under one id: not one sequence
        more = f" (and {len(twice) - 1} more rows)" if len(twice) > 1 else ""
        raise DataError(f"{path}: sequence {int(seq[twice[0]])} has frame {int(frame[twice[0]])} twice{more}")
    return seq, frame, _column_pieces(path, table.select(range(2, table.num_columns)))


def _check_keys(path: Path, table: pa.Table) -> None:
    """Every row names its sequence and frame: a row without one has no place in any sequence."""
    for j, key in enumerate(("sequence_id", "frame")):
        column = table.column(j)
        if column.null_count:
            import pyarrow.compute as pc

            row = int(pc.index(pc.is_null(column), True).as_py())
            where = "" if key == "sequence_id" else f" (sequence {table.column(0)[row].as_py()})"
            raise DataError(f"{path}: {column.null_count} row(s) have no {key}; the first is row {row}{where}")


def _column_pieces(path: Path, table: pa.Table) -> Iterator[tuple[int, list[np.ndarray]]]:
    row = 0
    try:
        for batch in table.to_batches():
            if batch.num_rows:
                # views of the buffers where possible (nulls become NaN; another float type is cast)
                yield row, [np.asarray(batch.column(j).to_numpy(zero_copy_only=False), np.float32)
                            for j in range(batch.num_columns)]
            row += batch.num_rows
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read landmarks ({e})") from None


def _grouped(seq: np.ndarray, frame: np.ndarray) -> bool:
    """Each sequence's rows are one block, frames ascending within it (as the competition's
    files are; a frame number is never repeated): then the file's row order is kept, and nothing is copied."""
    same = seq[1:] == seq[:-1]
    run_starts = seq[np.concatenate([[True], ~same])] if len(seq) else seq
    return len(np.unique(run_starts)) == len(run_starts) and bool(np.all(frame[1:][same] > frame[:-1][same]))


def sequence_runs(seq: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(sequence_ids, start rows, row counts) of the runs of equal ids in `seq`, rows grouped
    by sequence_id, in row order."""
    bounds = np.flatnonzero(seq[1:] != seq[:-1]) + 1
    starts = np.concatenate([[0], bounds]).astype(np.int64) if len(seq) else np.zeros(0, np.int64)
    lengths = np.diff(np.append(starts, len(seq))).astype(np.int64)
    return np.asarray(seq[starts], np.int64), starts, lengths


def split_sequences(seq: np.ndarray) -> dict[int, tuple[int, int]]:
    """sequence_id -> (start row, n rows) for rows grouped by sequence_id."""
    ids, starts, lengths = sequence_runs(seq)
    return {int(i): (int(s), int(n)) for i, s, n in zip(ids, starts, lengths)}
