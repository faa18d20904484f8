"""The 2nd place's decodings on held-out data: the competition score and the milliseconds per
sequence of CTC greedy, attention greedy and joint CTC/attention greedy, for each checkpoint
alone and for all of them averaged per step (the 2nd place's ensemble).

    .venv/bin/python benchmarks/decoding.py --data PREPARED CKPT [CKPT ...] [--ctc-weight 0.2] [--limit N]

The held-out samples are those in every checkpoint's validation split (each run's settings:
split, seed or split_seed, val_fraction; the splits differ where the seeds do), each decoded
alone in float32 on one thread, as an on-device model would run.
Prints the CPU's flags with the times.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import numpy as np
import torch

from aslfr.checkpoints import load_model
from aslfr.data.loader import select_samples
from aslfr.decoding import decode
from aslfr.hardware import describe_cpu
from aslfr.joint_training import JointSamples, ids_to_text
from aslfr.metric import competition_score


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("checkpoints", nargs="+", type=Path)
    ap.add_argument("--data", required=True, type=Path)
    ap.add_argument("--ctc-weight", type=float, default=0.2)
    ap.add_argument("--limit", type=int, default=None, help="only the first N held-out samples")
    a = ap.parse_args()
    torch.set_num_threads(1)
    loaded = [load_model(c) for c in a.checkpoints]
    models = [m for m, _, _ in loaded]
    cfg = loaded[0][1]
    samples = JointSamples(a.data, cfg, train=False)
    # held out from every checkpoint: the runs' splits differ where their seeds do
    val = select_samples(samples.ds, cfg, None)["val"]
    for _, other, _ in loaded[1:]:
        val = val[np.isin(val, select_samples(samples.ds, other, None)["val"])]
    if not len(val):
        raise SystemExit("no sample is held out from every checkpoint: their validation splits do not overlap "
                         "(train the runs with one --set split_seed)")
    val = val[: a.limit]
    targets = [samples.ds.phrases[i] for i in val]
    feats = [samples[(0, int(i))]["features"] for i in val]
    print(f"{describe_cpu()}; 1 thread, float32; {len(val)} sequences of {a.data} held out from every checkpoint")
    groups = [([m], c.name if c.name != "last.pt" else str(c.parent.parent.name)) for m, c in zip(models, a.checkpoints)]
    if len(models) > 1:
        groups.append((models, f"{len(models)} averaged per step"))
    print(f"{'models':<28} {'decoding':<10} {'score':>7} {'ms/seq median':>14}")
    for group, name in groups:
        for decoding in ("ctc", "attention", "joint"):
            texts, times = [], []
            for f in feats:
                t0 = time.perf_counter()
                ids = decode(group, f, decoding, a.ctc_weight)
                times.append((time.perf_counter() - t0) * 1e3)
                texts.append(ids_to_text(ids, cfg))
            print(f"{name:<28} {decoding:<10} {competition_score(texts, targets):>7.4f} "
                  f"{statistics.median(times):>14.1f}")


if __name__ == "__main__":
    main()
