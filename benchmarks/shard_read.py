"""Random access to prepared samples: `ShardDataset.rows(i)` on the sequence-block shards against
the same rows saved in the earlier row-major layout ([rows, 200], which still reads).

    .venv/bin/python benchmarks/shard_read.py [--sequences 1000] [--reads 20000]

Prints the median time per sample read (page cache warm, random order, one thread) of each
layout, alternating rounds in one run: `rows(i)` ([T, 200]) and what the training loader takes,
`np.ascontiguousarray(coords(i))` ([T, 100, 2]).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

from aslfr.data.prepare import prepare
from aslfr.data.shards import ShardDataset
from aslfr.data.synthetic import synthesize


def _row_major_copy(prepared: Path, out: Path) -> None:
    """`out`: the prepared directory with each shard rewritten as [rows, 200] rows."""
    shutil.copytree(prepared, out)
    ds = ShardDataset(prepared)
    for file_id in np.unique(ds.meta["file_id"]):
        mine = np.flatnonzero(ds.meta["file_id"] == file_id)
        rows = np.zeros((int(np.max(ds.meta["offset"][mine] + ds.meta["n_frames"][mine])), 200), np.float32)
        for i in mine:
            a = int(ds.meta["offset"][i])
            rows[a:a + int(ds.meta["n_frames"][i])] = ds.rows(int(i))
        np.save(out / "shards" / f"{file_id}.npy", rows)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--sequences", type=int, default=1000)
    ap.add_argument("--reads", type=int, default=20000)
    a = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data, blocks, rows = Path(tmp) / "data", Path(tmp) / "blocks", Path(tmp) / "rows"
        synthesize(data, sequences=a.sequences, participants=10, files=2, seed=0, progress=False)
        prepare(data, blocks, progress=False)
        _row_major_copy(blocks, rows)
        sets = {"sequence blocks": ShardDataset(blocks), "row-major": ShardDataset(rows)}
        order = np.random.default_rng(0).integers(0, len(sets["row-major"]), a.reads)
        for ds in sets.values():  # warm the page cache and the maps
            for i in range(len(ds)):
                ds.rows(i)
        reads = {"rows": lambda ds, i: ds.rows(i),
                 "loader's coords": lambda ds, i: np.ascontiguousarray(ds.coords(i))}
        times = {(r, name): [] for r in reads for name in sets}
        for _ in range(5):
            for r, read in reads.items():
                for name, ds in sets.items():
                    t = time.perf_counter()
                    for i in order:
                        read(ds, int(i))
                    times[r, name].append((time.perf_counter() - t) / a.reads)
        frames = float(np.mean(sets["row-major"].meta["n_frames"]))
        print(f"{len(order)} random samples, {frames:.0f} frames on average, median of 5 rounds:")
        for r in reads:
            b, m = (statistics.median(times[r, name]) for name in sets)
            print(f"  {r}: sequence blocks {b * 1e6:.1f} us, row-major {m * 1e6:.1f} us per sample ({b / m:.2f}x)")


if __name__ == "__main__":
    main()
