"""Training throughput of `seed-base` on this machine's CPU.

    .venv/bin/python benchmarks/train_step.py [--batch 32] [--frames 380] [--steps 5]

Times full optimiser steps (forward, CTC loss, backward, RAdam + Lookahead) on random inputs
and prints the median samples per second and the achieved GFLOP/s, from the counted FLOPs of
the network (forward x 3 for forward plus backward).
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from machine import sgemm_gflops

from aslfr.config import preset
from aslfr.model import FingerspellingModel, flops_per_sequence
from aslfr.optim import Lookahead, RAdam
from aslfr.vocab import BLANK


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="seed-base")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=380)
    ap.add_argument("--steps", type=int, default=5)
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = preset(a.preset)
    model = FingerspellingModel(cfg).train()
    opt = Lookahead(RAdam(model.parameters(), lr=1e-3, threshold=cfg.radam_threshold))
    x = torch.randn(a.batch, a.frames, 600)
    labels = torch.randint(0, BLANK, (a.batch, 64))
    label_lengths = torch.full((a.batch,), 20)
    input_lengths = torch.full((a.batch,), a.frames)
    times = []
    for i in range(a.steps + 1):
        t = time.perf_counter()
        logits = model(x)
        loss = F.ctc_loss(F.log_softmax(logits, -1).transpose(0, 1), labels, input_lengths, label_lengths,
                          blank=BLANK, reduction="none").mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if i:  # the first step warms up allocators and kernels
            times.append(time.perf_counter() - t)
    step = statistics.median(times)
    flops = 3 * flops_per_sequence(cfg, a.frames) * a.batch
    print(f"{a.preset}, batch {a.batch}, T={a.frames}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"median step: {step:.2f} s over {a.steps} steps")
    print(f"throughput: {a.batch / step:.2f} samples/s")
    print(f"achieved: {flops / step / 1e9:.1f} GFLOP/s ({flops / a.batch / 1e9:.1f} GFLOPs per sample, forward + backward)")
    peak = sgemm_gflops(a.batch * a.frames, cfg.dim, cfg.dim * cfg.expand)  # the network's own shape
    print(f"SGEMM on this machine, {torch.get_num_threads()} threads: {peak:.0f} GFLOP/s, so the float32 limit is "
          f"{peak * 1e9 / (flops / a.batch):.1f} samples/s; achieved {flops / step / 1e9 / peak:.0%} of it")


if __name__ == "__main__":
    main()
