"""`aslfr prepare`: Kaggle layout (or the seed's TFRecords) -> shards, metadata and statistics.

Files are processed in parallel and independently; each one is finished by writing its
`.done.json` last, so an interrupted run resumes with the files that are not done, and a file
cut off half-way never looks finished. Everything that can be checked before writing (the csv,
file presence, column names and types, the output directory) is checked first.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from tqdm import tqdm

from aslfr.data.kaggle import (DataError, SequenceInfo, check_landmark_schema, read_metadata,
                               read_sequence_blocks)
from aslfr.data.moments import FeatureMoments, sequence_sums
from aslfr.data.shards import METADATA_FIELDS, N_COLUMNS, prepared_options, to_blocks
from aslfr.data.tfrecords import TFRecordError, file_id_of, read_seed_file
from aslfr.files import save_npy, save_npz, write_json, write_table
from aslfr.landmarks import LANDMARK_COLUMNS, SELECTED_COLUMNS
from aslfr.vocab import COMPETITION, CharacterMap

_RIGHT_WRIST_X = SELECTED_COLUMNS.index("x_right_hand_0")
_LEFT_WRIST_X = SELECTED_COLUMNS.index("x_left_hand_0")

#: Reasons a sequence is left out; each is counted in prepare.json.
SKIP_REASONS = {
    "unknown_characters": "phrase has characters outside the character map",
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
    characters: tuple[str, ...] = tuple(COMPETITION.tokens)
    all_landmarks: bool = False  # also keep all 543 landmarks' x, y, z (the 2nd place's input)


#: which landmarks a prepared directory keeps
LANDMARK_SETS = ("seed", "all")


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


def available_cpus() -> int:
    """The CPUs this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def job_input(job: FileJob) -> dict:
    """What a file's shard is made from: the source file (name, size, modification time) and,
    for the Kaggle layout, its rows of the csv (sequence, participant, phrase). A shard whose
    record differs was made from other input and is never reused."""
    st = job.path.stat()
    listed = hashlib.sha256(json.dumps([[i.sequence_id, i.participant_id, i.phrase] for i in job.sequences])
                            .encode()).hexdigest()
    record = {"kind": job.kind, "file": job.path.name, "size": st.st_size, "mtime_ns": st.st_mtime_ns,
              "source": job.source, "csv_rows": listed}
    if job.characters != COMPETITION.tokens:  # another alphabet keeps other sequences
        record["characters"] = CharacterMap(job.characters).digest()
    return record


def _is_done(out: Path, job: FileJob) -> bool:
    """True for a shard finished from this job's input; an error for one made from other input."""
    marker = out / "shards" / f"{job.file_id}.done.json"
    if not marker.is_file():
        return False
    made_from = json.loads(marker.read_text()).get("input")
    now = job_input(job)
    if made_from != now:
        what = ("it records no input (an earlier aslfr)" if made_from is None else
                ", ".join(f"{k} {made_from.get(k)!r} -> {now[k]!r}" for k in now if made_from.get(k) != now[k]))
        raise DataError(f"{marker}: file {job.file_id} was prepared from other input ({what}); prepare into a "
                        f"new directory, or delete {out} to prepare it again")
    return True


def _check_same_files(out: Path, jobs: list[FileJob]) -> None:
    """A prepared directory holds the shards of one dataset: refuse one with other files."""
    ids = {str(j.file_id) for j in jobs}
    done = sorted(p.name.split(".")[0] for p in (out / "shards").glob("*.done.json"))
    other = [d for d in done if d not in ids]
    if other:
        raise DataError(f"{out}: holds {len(other)} prepared file(s) that this dataset does not have (file_id "
                        f"{other[0]}): it was prepared from other data or other options (--supplemental); "
                        f"prepare into a new directory, or delete it to start over")


def _check_options(out: Path, options: dict) -> None:
    """A prepared directory holds one set of options (`options.json`): a rerun with others is
    refused before anything is written, since it would rewrite metadata.parquet under the runs
    trained on it. A directory from before options.json tells them by its shards' sources."""
    path = out / "options.json"
    old = prepared_options(out)
    if old is None:
        markers = list((out / "shards").glob("*.done.json")) if (out / "shards").is_dir() else []
        sources = {json.loads(m.read_text()).get("input", {}).get("source") for m in markers}
        old = {"supplemental": "supplemental" in sources} if markers else None
    if old is not None and old != options:
        if old.get("supplemental") != options.get("supplemental"):
            what = f"{'with' if old.get('supplemental') else 'without'} --supplemental"
        else:
            what = f"with --landmarks {old.get('landmarks', 'seed')}"
        raise DataError(f"{out}: was prepared {what}; prepare into a new directory, or delete it to start over")
    if not path.is_file():
        out.mkdir(parents=True, exist_ok=True)
        write_json(path, options)


def prepare_file(job: FileJob, out: Path, threads: int | None = None) -> dict[str, int]:
    """Prepare one source file into its shard, on `threads` threads (default: every CPU this
    process may use); returns its skip counts.

    The file is read straight into sequence blocks (the shard layout); one pass over them
    (`sequence_sums`) gives the statistics' sums, the hand-frame counts and the all-NaN check
    of every sequence, while another thread writes the shard.
    """
    threads = threads or available_cpus()
    skipped: Counter[str] = Counter()
    entries: list[tuple[int, int, str, int, int]] = []  # (sequence_id, participant, phrase, start, n)
    if job.kind == "parquet":
        read = read_sequence_blocks(job.path, threads=threads)
        values = read.blocks
        found = {int(i): (int(a), int(n)) for i, a, n in zip(read.sequence_ids, read.starts, read.lengths)}
        listed = {info.sequence_id for info in job.sequences}
        skipped["not_in_csv"] += sum(1 for s in found if s not in listed)
        for info in job.sequences:
            if info.sequence_id not in found:
                skipped["missing_in_parquet"] += 1
                continue
            entries.append((info.sequence_id, info.participant_id, info.phrase, *found[info.sequence_id]))
    else:
        try:
            records = read_seed_file(job.path, job.file_id)
        except TFRecordError as e:
            raise DataError(str(e)) from None
        values = to_blocks([r.rows for r in records])
        start = 0
        for r in records:
            entries.append((r.sequence_id, r.participant_id, r.phrase, start, len(r.rows)))
            start += len(r.rows)

    # The shard is the file's sequence blocks as read, written while the statistics pass runs;
    # the block of a skipped sequence stays in it, unreferenced.
    shard = out / "shards"
    writer = ThreadPoolExecutor(1)
    written = writer.submit(save_npy, shard / f"{job.file_id}.npy", values)
    try:
        kept, sums, starts, lengths = _checked_sequences(entries, values, skipped, threads,
                                                         CharacterMap(job.characters), job.path)
    finally:
        writer.shutdown()
    written.result()
    if job.all_landmarks:  # the same rows, every column: sequence blocks at the same row offsets
        if job.kind != "parquet":
            raise DataError(f"{job.path}: the seed's TFRecords hold only its 100 landmarks' x and y; --landmarks "
                            f"all needs the Kaggle parquet files")
        every = read_sequence_blocks(job.path, LANDMARK_COLUMNS, threads=threads)
        if not np.array_equal(every.starts, read.starts) or not np.array_equal(every.lengths, read.lengths):
            raise DataError(f"{job.path}: its rows read differently for all columns; the file changed while read?")
        save_npy(shard / f"{job.file_id}.all.npy", every.blocks)

    meta = {
        "sequence_id": np.array([e[0] for e in kept], np.int64),
        "participant_id": np.array([e[1] for e in kept], np.int64),
        "file_id": np.full(len(kept), job.file_id, np.int64),
        "phrase": [e[2] for e in kept],
        "n_frames": lengths,
        # frames in which right / left hand landmark 0 is detected (SEED-SPEC 7.1)
        "n_right_hand_frames": sums[:, 0, _RIGHT_WRIST_X].astype(np.int64),
        "n_left_hand_frames": sums[:, 0, _LEFT_WRIST_X].astype(np.int64),
        "source": [job.source] * len(kept),
        "offset": starts,
    }
    moments = FeatureMoments()
    moments.add_sums(sums, lengths)
    moments.save(shard / f"{job.file_id}.stats.npz")
    write_table(shard / f"{job.file_id}.meta.parquet", {k: meta[k] for k in METADATA_FIELDS})
    write_json(shard / f"{job.file_id}.done.json",
               {"source_file": str(job.path), "input": job_input(job), "sequences": len(kept),
                "rows": len(values) // N_COLUMNS, "skipped": dict(skipped)})
    return dict(skipped)


def _checked_sequences(entries: list[tuple[int, int, str, int, int]], values: np.ndarray,
                       skipped: Counter[str], threads: int, charmap: CharacterMap,
                       source: Path):  # noqa: ANN202
    """Drop (and count) sequences with unknown characters or no landmark at all; returns the
    kept entries and their `sequence_sums` rows, start rows and frame counts. An infinite
    landmark value (NaN is "not detected"; infinity is no coordinate) is an error naming the
    file, the sequence and the column: it would turn the statistics into NaN."""
    known = []
    for e in entries:
        if charmap.unknown(e[2]) is not None:
            skipped["unknown_characters"] += 1
        else:
            known.append(e)
    starts = np.array([e[3] for e in known], np.int64)
    lengths = np.array([e[4] for e in known], np.int64)
    sums = sequence_sums(values, starts, lengths, threads)
    finite = np.isfinite(sums).all(axis=(1, 2))  # the sums of a sequence with an infinity are not
    if not finite.all():
        k = int(np.flatnonzero(~finite)[0])
        column = SELECTED_COLUMNS[int(np.flatnonzero(~np.isfinite(sums[k]).all(axis=0))[0])]
        raise DataError(f"{source}: sequence_id {known[k][0]} has an infinite value in column {column}; landmarks "
                        f"must be finite numbers, or NaN where nothing was detected")
    detected = sums[:, 0].sum(1) > 0  # any landmark of any frame
    skipped["all_nan"] += int(np.count_nonzero(~detected))
    kept = [e for e, ok in zip(known, detected) if ok]
    return kept, sums[detected], starts[detected], lengths[detected]


def _ignore_interrupts() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _run(args: tuple[FileJob, Path, int]) -> tuple[int, dict[str, int]]:
    job, out, threads = args
    return job.file_id, prepare_file(job, out, threads)


def prepare(data_dir: str | Path, out_dir: str | Path, supplemental: bool = False,
            workers: int = 1, progress: bool = True, characters: CharacterMap | None = None,
            landmarks: str = "seed") -> dict:
    """Prepare a dataset with `characters` (default: the competition's map); returns the summary
    also written to OUT_DIR/prepare.json. `landmarks`: "seed" keeps the seed's 100 landmarks'
    x and y; "all" also keeps every landmark's x, y and z (`shards/<file_id>.all.npy`), which the
    2nd place's network reads."""
    if landmarks not in LANDMARK_SETS:
        raise ValueError(f"--landmarks {landmarks}: expected one of {', '.join(LANDMARK_SETS)}")
    t0 = time.time()
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ValueError(f"--workers {workers}: expected a whole number of processes, at least 1")
    data_dir, out = Path(data_dir), Path(out_dir)
    charmap = characters or COMPETITION
    jobs = [replace(j, characters=charmap.tokens, all_landmarks=landmarks == "all")
            for j in plan_jobs(data_dir, supplemental)]
    if not jobs:
        raise DataError(f"{data_dir}: no landmark files to prepare")
    if landmarks == "all":
        for j in jobs:
            if j.kind == "parquet":
                check_landmark_schema(j.path, LANDMARK_COLUMNS)
    _check_output_dir(out)
    _check_same_files(out, jobs)
    _check_options(out, {"supplemental": supplemental, **({"landmarks": landmarks} if landmarks != "seed" else {})})
    earlier = out / "characters.json"
    if earlier.is_file() and CharacterMap.load(earlier) != charmap:
        raise DataError(f"{earlier}: {out} was prepared with another character map; prepare into a new "
                        f"directory, or delete it to start over")
    todo = [j for j in jobs if not _is_done(out, j)]
    threads = max(1, available_cpus() // max(1, min(workers, len(todo))))  # per worker: the kernels' threads
    args = [(j, out, threads) for j in todo]
    # the bar is closed before an error or an interrupt is printed, so that one is a line of its own
    with tqdm(total=len(jobs), initial=len(jobs) - len(todo), desc="prepare files", disable=not progress) as bar:
        if workers > 1 and len(todo) > 1:
            # the workers leave Ctrl-C to this process, which stops handing out files and waits for
            # the ones being written (each is written whole or not at all), so a rerun resumes
            pool = ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                                       initializer=_ignore_interrupts)
            try:
                for _ in pool.map(_run, args):
                    bar.update()
            finally:
                pool.shutdown(wait=True, cancel_futures=True)
        else:
            for a in args:
                _run(a)
                bar.update()
    charmap.save(out / "characters.json")
    return _combine(jobs, out, time.time() - t0)


def _combine(jobs: list[FileJob], out: Path, seconds: float) -> dict:
    """Merge per-file tables and moments into metadata.parquet, stats.npz and prepare.json."""
    shard = out / "shards"
    tables = [pq.read_table(shard / f"{j.file_id}.meta.parquet") for j in jobs]
    meta = pa.concat_tables(tables)
    if meta.num_rows == 0:
        skipped = Counter()
        for j in jobs:
            skipped.update(json.loads((shard / f"{j.file_id}.done.json").read_text())["skipped"])
        why = "; ".join(f"{n} {SKIP_REASONS[k]}" for k, n in skipped.items() if n) or "the files have no rows"
        raise DataError(f"{out}: no usable sequence in {len(jobs)} file(s) ({why})")
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
        "characters": len(CharacterMap(jobs[0].characters)),
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

