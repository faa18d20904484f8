"""Reading the competition's layout: metadata csv files and landmark parquet files.

Every check names the file (and sequence) at fault, because on the real 170 GB dataset a bare
traceback from deep inside pyarrow is no help.
"""

from __future__ import annotations

import csv
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


def read_landmarks(path: Path, columns: list[str] = SELECTED_COLUMNS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Read only `columns` of one landmark file.

    Returns (sequence_ids, frames, values[rows, len(columns)] float32), rows sorted by
    (sequence_id, frame) so that each sequence is one contiguous block.
    """
    check_landmark_schema(path, columns)
    try:
        table = pq.read_table(path, columns=["sequence_id", "frame", *columns], use_threads=True)
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"{path}: cannot read landmarks ({e})") from None
    seq = table.column("sequence_id").to_numpy()
    frame = table.column("frame").to_numpy()
    values = np.empty((len(columns), table.num_rows), dtype=np.float32)
    for j, c in enumerate(columns):  # contiguous writes, then one transpose
        values[j] = table.column(c).to_numpy()
    values = np.ascontiguousarray(values.T)
    if not (np.all(seq[1:] >= seq[:-1]) and _frames_sorted(seq, frame)):
        order = np.lexsort((frame, seq))
        seq, frame, values = seq[order], frame[order], values[order]
    return seq, frame, values


def _frames_sorted(seq: np.ndarray, frame: np.ndarray) -> bool:
    same = seq[1:] == seq[:-1]
    return bool(np.all(frame[1:][same] >= frame[:-1][same]))


def split_sequences(seq: np.ndarray) -> dict[int, tuple[int, int]]:
    """sequence_id -> (start row, n rows) for rows grouped by sequence_id."""
    if len(seq) == 0:
        return {}
    bounds = np.flatnonzero(seq[1:] != seq[:-1]) + 1
    starts = np.concatenate([[0], bounds])
    ends = np.concatenate([bounds, [len(seq)]])
    return {int(seq[s]): (int(s), int(e - s)) for s, e in zip(starts, ends)}
