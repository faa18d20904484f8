"""`aslfr prepare`: Kaggle layout (or the seed's TFRecords) -> shards, metadata and statistics.

Files are processed in parallel and independently; each one is finished by writing its
`.done.json` last, so an interrupted run resumes with the files that are not done, and a file
cut off half-way never looks finished. Everything that can be checked before writing (the csv,
file presence, column names and types, the output directory) is checked first.
"""

from __future__ import annotations

import json
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from aslfr.data.kaggle import (DataError, SequenceInfo, check_landmark_schema, read_landmarks,
                               read_metadata, split_sequences)
from aslfr.data.shards import (METADATA_FIELDS, FeatureMoments, hand_frame_counts, save_npy,
                               save_npz, write_json, write_table)
from aslfr.data.tfrecords import TFRecordError, file_id_of, read_seed_file
from aslfr.vocab import CHAR_TO_INDEX

#: Reasons a sequence is left out; each is counted in prepare.json.
SKIP_REASONS = {
    "unknown_characters": "phrase has characters outside the 59-character map",
    "missing_in_parquet": "listed in the csv but has no rows in its parquet file",
    "not_in_csv": "has rows in a parquet file but is not listed in the csv",
    "all_nan": "every landmark of every frame is NaN",
}


@dataclass(frozen=True)
class FileJob:
    kind: str               # "parquet" or "tfrecord"
    path: Path
    file_id: int
    source: str             # "train" or "supplemental"
    sequences: tuple[SequenceInfo, ...] = ()


def _check_output_dir(out: Path) -> None:
    try:
        (out / "shards").mkdir(parents=True, exist_ok=True)
        probe = out / "shards" / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise DataError(f"{out}: output directory is not writable ({e.strerror or e})") from None


def plan_jobs(data_dir: Path, supplemental: bool) -> list[FileJob]:
    """The files to prepare, after every check that needs no heavy reading."""
    if not data_dir.is_dir():
        raise DataError(f"{data_dir}: data directory not found")
    records = sorted(list(data_dir.glob("*.tfrecord")) + list(data_dir.glob("*.tfrecords")))
    if not (data_dir / "train.csv").exists() and records:
        jobs = [FileJob("tfrecord", p, file_id_of(p, i), "train") for i, p in enumerate(records)]
        return sorted(jobs, key=lambda j: j.file_id)
    jobs = []
    for source in ("train", "supplemental") if supplemental else ("train",):
        by_file: dict[str, list[SequenceInfo]] = defaultdict(list)
        for info in read_metadata(data_dir, source):
            by_file[info.path].append(info)
        missing = [p for p in by_file if not (data_dir / p).is_file()]
        if missing:
            raise DataError(f"{data_dir / missing[0]}: landmark file listed in the {source} metadata "
                            f"is missing ({len(missing)} of {len(by_file)} files missing)")
        for rel, infos in sorted(by_file.items(), key=lambda kv: kv[1][0].file_id):
            check_landmark_schema(data_dir / rel)
            jobs.append(FileJob("parquet", data_dir / rel, infos[0].file_id, source, tuple(infos)))
    return jobs


def _is_done(out: Path, job: FileJob) -> bool:
    return (out / "shards" / f"{job.file_id}.done.json").is_file()


def prepare_file(job: FileJob, out: Path) -> dict[str, int]:
    """Prepare one source file into its shard; returns its skip counts."""
    skipped: Counter[str] = Counter()
    entries: list[tuple[int, int, str, np.ndarray]] = []  # (sequence_id, participant, phrase, rows)
    if job.kind == "parquet":
        seq, _, values = read_landmarks(job.path)
        blocks = split_sequences(seq)
        listed = {info.sequence_id for info in job.sequences}
        skipped["not_in_csv"] += sum(1 for s in blocks if s not in listed)
        for info in job.sequences:
            if info.sequence_id not in blocks:
                skipped["missing_in_parquet"] += 1
                continue
            start, n = blocks[info.sequence_id]
            entries.append((info.sequence_id, info.participant_id, info.phrase, values[start:start + n]))
    else:
        try:
            records = read_seed_file(job.path, job.file_id)
        except TFRecordError as e:
            raise DataError(str(e)) from None
        entries = [(r.sequence_id, r.participant_id, r.phrase, r.rows) for r in records]

    kept = []
    for sequence_id, participant, phrase, rows in entries:
        if any(c not in CHAR_TO_INDEX for c in phrase):
            skipped["unknown_characters"] += 1
        elif np.isnan(rows).all():
            skipped["all_nan"] += 1
        else:
            kept.append((sequence_id, participant, phrase, rows))

    meta: dict[str, list] = {k: [] for k in METADATA_FIELDS}
    offset = 0
    for sequence_id, participant, phrase, rows in kept:
        right, left = hand_frame_counts(rows)
        for k, v in zip(METADATA_FIELDS, (sequence_id, participant, job.file_id, phrase, len(rows),
                                          right, left, job.source, offset)):
            meta[k].append(v)
        offset += len(rows)
    data = np.concatenate([r[3] for r in kept]) if kept else np.zeros((0, 200), np.float32)
    moments = FeatureMoments()
    lengths = np.asarray(meta["n_frames"], np.int64)
    for chunk in np.array_split(np.arange(len(kept)), max(1, len(kept) // 128)):
        if len(chunk):
            start = int(meta["offset"][chunk[0]])
            stop = start + int(lengths[chunk].sum())
            moments.add(data[start:stop], lengths[chunk])

    shard = out / "shards"
    save_npy(shard / f"{job.file_id}.npy", np.ascontiguousarray(data, np.float32))
    moments.save(shard / f"{job.file_id}.stats.npz")
    write_table(shard / f"{job.file_id}.meta.parquet", _typed(meta))
    write_json(shard / f"{job.file_id}.done.json",
               {"source_file": str(job.path), "sequences": len(kept), "rows": int(offset),
                "skipped": dict(skipped)})
    return dict(skipped)


def _typed(meta: dict[str, list]) -> dict[str, np.ndarray | list]:
    ints = ("sequence_id", "participant_id", "file_id", "n_frames", "n_right_hand_frames",
            "n_left_hand_frames", "offset")
    return {k: (np.asarray(v, np.int64) if k in ints else v) for k, v in meta.items()}


def _run(args: tuple[FileJob, Path]) -> tuple[int, dict[str, int]]:
    job, out = args
    return job.file_id, prepare_file(job, out)


def prepare(data_dir: str | Path, out_dir: str | Path, supplemental: bool = False,
            workers: int = 1, progress: bool = True) -> dict:
    """Prepare a dataset; returns the summary also written to OUT_DIR/prepare.json."""
    t0 = time.time()
    data_dir, out = Path(data_dir), Path(out_dir)
    jobs = plan_jobs(data_dir, supplemental)
    if not jobs:
        raise DataError(f"{data_dir}: no landmark files to prepare")
    _check_output_dir(out)
    todo = [j for j in jobs if not _is_done(out, j)]
    bar = tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="prepare files", disable=not progress)
    args = [(j, out) for j in todo]
    if workers > 1 and len(todo) > 1:
        with ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn")) as pool:
            for _ in pool.map(_run, args):
                bar.update()
    else:
        for a in args:
            _run(a)
            bar.update()
    bar.close()
    return _combine(jobs, out, time.time() - t0)


def _combine(jobs: list[FileJob], out: Path, seconds: float) -> dict:
    """Merge per-file tables and moments into metadata.parquet, stats.npz and prepare.json."""
    shard = out / "shards"
    tables = [pq.read_table(shard / f"{j.file_id}.meta.parquet") for j in jobs]
    meta = pa.concat_tables(tables)
    ids = meta.column("sequence_id").to_numpy()
    if len(np.unique(ids)) != len(ids):
        dup = ids[np.flatnonzero(np.bincount(np.unique(ids, return_inverse=True)[1]) > 1)[0]]
        raise DataError(f"sequence_id {dup} appears in more than one landmark file")
    moments = FeatureMoments()
    for j in jobs:
        if j.source == "train":
            moments.merge(FeatureMoments.load(shard / f"{j.file_id}.stats.npz"))
    mean, std = moments.mean_std()
    skipped: Counter[str] = Counter()
    for j in jobs:
        skipped.update(json.loads((shard / f"{j.file_id}.done.json").read_text())["skipped"])
    write_table(out / "metadata.parquet", {n: meta.column(n).to_numpy(zero_copy_only=False)
                                           if n != "phrase" and n != "source" else meta.column(n).to_pylist()
                                           for n in meta.column_names})
    save_npz(out / "stats.npz", mean=mean, std=std)
    summary = {
        "files": len(jobs),
        "sequences": int(meta.num_rows),
        "frames": int(np.sum(meta.column("n_frames").to_numpy())),
        "skipped": {k: skipped.get(k, 0) for k in SKIP_REASONS},
        "skip_reasons": SKIP_REASONS,
        "seconds": round(seconds, 2),
    }
    write_json(out / "prepare.json", summary)
    return summary


def describe(summary: dict) -> str:
    lines = [f"prepared {summary['sequences']} sequences ({summary['frames']} frames) "
             f"from {summary['files']} files in {summary['seconds']:.1f} s"]
    for reason, n in summary["skipped"].items():
        if n:
            lines.append(f"  skipped {n}: {SKIP_REASONS[reason]}")
    return "\n".join(lines)

