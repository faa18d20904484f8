"""Prepare one real-size landmark file and compare with pyarrow's bare read of the same columns.

    .venv/bin/python benchmarks/prepare.py [--sequences 1000] [--repeats 3]

Prints the medians of both and their ratio (target: prepare within 2x of the bare read), and of
the read into the shard layout alone (`read_sequence_blocks`: read plus copy), to show where the
rest goes. The bare read is timed two ways: `pq.read_table` (pyarrow's usual call) and a
`ParquetFile` opened with `memory_map=True` (the fastest read of these columns found here, and
the way `prepare` opens its files); the ratio is given against both.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import pyarrow.parquet as pq

from aslfr.data.kaggle import read_sequence_blocks
from aslfr.data.prepare import available_cpus, plan_jobs, prepare_file
from aslfr.data.synthetic import synthesize
from aslfr.landmarks import SELECTED_COLUMNS


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequences", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=7)
    a = ap.parse_args()
    cpus = available_cpus()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        synthesize(data, sequences=a.sequences, participants=10, files=1, seed=0, progress=False)
        (job,) = plan_jobs(data, supplemental=False)
        meta = pq.read_metadata(job.path)
        print(f"file: {meta.num_rows} rows x {meta.num_columns} columns, "
              f"{job.path.stat().st_size / 1e6:.0f} MB, {a.sequences} sequences")
        cols = ["sequence_id", "frame", *SELECTED_COLUMNS]
        read, mapped, prep, rows = [], [], [], []
        warm = Path(tmp) / "warm-up"  # one untimed run: the compiled kernels are loaded from their cache
        (warm / "shards").mkdir(parents=True)
        prepare_file(job, warm, threads=cpus)
        shutil.rmtree(warm)
        for r in range(a.repeats):
            t = time.perf_counter()
            pq.read_table(job.path, columns=cols)
            read.append(time.perf_counter() - t)
            t = time.perf_counter()
            pq.ParquetFile(job.path, memory_map=True).read(columns=cols)
            mapped.append(time.perf_counter() - t)
            t = time.perf_counter()
            read_sequence_blocks(job.path, threads=cpus)
            rows.append(time.perf_counter() - t)
            out = Path(tmp) / f"out{r}"
            (out / "shards").mkdir(parents=True)
            t = time.perf_counter()
            prepare_file(job, out, threads=cpus)
            prep.append(time.perf_counter() - t)
            shutil.rmtree(out)
        r, m, p = statistics.median(read), statistics.median(mapped), statistics.median(prep)
        print(f"bare pyarrow read of the 200 columns, pq.read_table: {r:.3f} s (median of {a.repeats})")
        print(f"bare pyarrow read of the 200 columns, memory-mapped ParquetFile: {m:.3f} s")
        print(f"read into the sequence blocks of the shard: {statistics.median(rows):.3f} s "
              f"({statistics.median(rows) / r:.2f}x pq.read_table, {statistics.median(rows) / m:.2f}x memory-mapped)")
        print(f"prepare one file (read, split, shard, statistics), {cpus} threads: {p:.3f} s "
              f"(median of {a.repeats})")
        print(f"ratio prepare / bare read: {p / r:.2f}x (pq.read_table), {p / m:.2f}x (memory-mapped)")
        print(f"projection for the 68 training files: {68 * p / 60:.1f} min "
              f"({cpus} threads; --workers splits the same cores)")


if __name__ == "__main__":
    main()
