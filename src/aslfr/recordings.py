"""Your own recordings -> a Kaggle-layout dataset that `prepare`, `train` and `pipeline` take.

    aslfr landmarks RECORDINGS_DIR --phrases phrases.csv --out DATASET [--workers N] [--characters map.json]

phrases.csv has the columns file, phrase, participant: `file` is a video (MediaPipe Holistic runs
on it in the video environment) or a `.pose` file (read as it is) under RECORDINGS_DIR;
`participant` is a number or a name. Each recording becomes one sequence in its own parquet file,
`train_landmarks/<file_id>.parquet` (ids are stable hashes of the file's name and of the
participant's name), listed in `train.csv`; the character map (the given one, or every character
the phrases use, in sorted order) is written as `character_to_prediction_index.json`.

Resumable: a recording whose parquet is finished (with a record of the source's size and
modification time) is not extracted again unless the source changed. A recording that fails
(unreadable, nothing detected, phrase outside the map) goes to `failures.csv` with the reason,
and the others go on. What comes out is checked as `prepare` checks its input.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from aslfr.data.kaggle import DataError, check_landmark_schema, csv_rows, read_landmarks
from aslfr.files import write_csv, write_json
from aslfr.landmarks import LANDMARK_COLUMNS
from aslfr.recognizer import VIDEO_SUFFIXES
from aslfr.vocab import CharacterMap

REQUIRED = ("file", "phrase", "participant")


@dataclass(frozen=True)
class Recording:
    file: str
    phrase: str
    participant: str

    @property
    def sequence_id(self) -> int:
        return _stable_id("sequence", self.file)

    @property
    def participant_id(self) -> int:
        p = self.participant.strip()
        return int(p) if p.isdigit() else _stable_id("participant", p)


def _stable_id(kind: str, name: str) -> int:
    return int.from_bytes(hashlib.sha256(f"{kind}:{name}".encode()).digest()[:4], "big") % (2**31 - 10**6) + 10**6


def read_phrases(path: Path, root: Path) -> list[Recording]:
    if not path.is_file():
        raise FileNotFoundError(f"{path}: phrases file not found")
    rows = [Recording(r["file"].strip(), r["phrase"], r["participant"]) for r in csv_rows(path, REQUIRED)]
    if not rows:
        raise DataError(f"{path}: no recordings listed")
    seen: dict[str, int] = {}
    for line, r in enumerate(rows, 2):
        if not r.file or not r.phrase or not r.participant.strip():
            raise DataError(f"{path}, line {line}: file, phrase and participant must all be given")
        if r.file in seen:
            raise DataError(f"{path}, line {line}: {r.file} is listed twice (first on line {seen[r.file]})")
        seen[r.file] = line
        suffix = Path(r.file).suffix.lower()
        if suffix != ".pose" and suffix not in VIDEO_SUFFIXES:
            raise DataError(f"{path}, line {line}: {r.file} is neither a video ({', '.join(sorted(VIDEO_SUFFIXES))}) "
                            f"nor a .pose file")
    return rows


def _source_record(src: Path) -> dict:
    st = src.stat()
    return {"file": src.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns}


def _write_sequence(path: Path, sequence_id: int, rows: np.ndarray) -> None:
    """One sequence in the Kaggle layout (sequence_id index, frame, the 1,629 columns)."""
    columns = {"sequence_id": pa.array(np.full(len(rows), sequence_id, np.int64)),
               "frame": pa.array(np.arange(len(rows), dtype=np.int16))}
    for k, name in enumerate(LANDMARK_COLUMNS):
        columns[name] = pa.array(rows[:, k])
    table = pa.table(columns)
    tmp = path.with_name(f".{path.name}.partial")
    pq.write_table(table, tmp)
    tmp.replace(path)


def _extract(rec: Recording, root: Path, out: Path) -> str | None:
    """Landmarks of one recording into its parquet; None when done, else why it failed."""
    from aslfr.posefile import read_pose
    from aslfr.sources import MissingExtra, extract_landmarks

    src = root / rec.file
    target = out / "train_landmarks" / f"{rec.sequence_id}.parquet"
    marker = target.with_suffix(".done.json")
    if not src.is_file():
        return "file not found"
    if marker.is_file() and target.is_file() and json.loads(marker.read_text()) == _source_record(src):
        return None  # finished from this very source
    try:
        if src.suffix.lower() == ".pose":
            rows, _ = read_pose(src)
        else:
            with tempfile.TemporaryDirectory(prefix="aslfr-") as tmp:
                ids, _, rows = read_landmarks(extract_landmarks(src, Path(tmp) / "x.parquet", progress=False),
                                              LANDMARK_COLUMNS)
    except MissingExtra:
        raise
    except (DataError, ValueError, OSError) as e:
        return str(e).replace(str(src) + ": ", "")
    if not len(rows):
        return "no frames"
    if not np.isfinite(rows).any():
        return "nothing detected in any frame"
    _write_sequence(target, rec.sequence_id, np.asarray(rows, np.float32))
    write_json(marker, _source_record(src))
    return None


def build_dataset(root: str | Path, phrases: str | Path, out: str | Path, workers: int = 1,
                  characters: CharacterMap | None = None, progress: bool = True) -> dict:
    """Write the dataset; returns counts and the failures (also in OUT/failures.csv)."""
    root, out = Path(root), Path(out)
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers {workers}: expected a whole number of extractions at once, at least 1")
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: recordings directory not found")
    recordings = read_phrases(Path(phrases), root)
    charmap = characters or CharacterMap(sorted({c for r in recordings for c in r.phrase}), "the phrases' characters")
    earlier = out / "character_to_prediction_index.json"
    if earlier.is_file() and CharacterMap.load(earlier) != charmap:
        raise DataError(f"{earlier}: {out} was built with another character map; use a new --out or delete it")
    (out / "train_landmarks").mkdir(parents=True, exist_ok=True)
    failures: dict[str, str] = {}
    usable = []
    for r in recordings:
        bad = charmap.unknown(r.phrase)
        if bad is not None:
            failures[r.file] = f"phrase {r.phrase!r}: character {bad!r} is not in the character map"
        else:
            usable.append(r)
    with ThreadPoolExecutor(max(1, workers)) as pool:  # each extraction is its own process
        results = list(tqdm(pool.map(lambda r: _extract(r, root, out), usable), total=len(usable),
                            desc="recordings", unit="file", disable=not progress))
    done = []
    for r, why in zip(usable, results):
        if why is None:
            done.append(r)
        else:
            failures[r.file] = why
    for r in done:  # what comes out passes prepare's checks
        check_landmark_schema(out / "train_landmarks" / f"{r.sequence_id}.parquet")
    if not done:
        raise DataError(f"{out}: no recording could be used ({len(failures)} failed; first: "
                        f"{next(iter(failures.items()))[0]}: {next(iter(failures.values()))})")
    write_csv(out / "train.csv", ["path", "file_id", "sequence_id", "participant_id", "phrase"],
                [(f"train_landmarks/{r.sequence_id}.parquet", r.sequence_id, r.sequence_id, r.participant_id, r.phrase)
                 for r in done])
    write_csv(out / "failures.csv", ["file", "reason"], sorted(failures.items()))
    write_csv(out / "recordings.csv", ["file", "sequence_id", "participant", "participant_id"],
                [(r.file, r.sequence_id, r.participant, r.participant_id) for r in done])
    charmap.save(out / "character_to_prediction_index.json")
    return {"recordings": len(recordings), "written": len(done), "failed": len(failures),
            "failures": failures, "characters": len(charmap)}


__all__ = ["build_dataset", "read_phrases"]
