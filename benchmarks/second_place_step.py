"""Training throughput of `second-place` beside `seed-base` on this machine's CPU, step by step in
one run.

    .venv/bin/python benchmarks/second_place_step.py [--batch 16] [--steps 3] [--bf16] [--awp]

Each preset's full optimiser step at its own shapes: `seed-base` at T=380 (600 features, CTC,
RAdam + Lookahead), `second-place` at T=768 (1,629 features padded with -100, the attention and
CTC losses, AdamW; `--awp`: with its adversarial weight perturbation, two forward and backward
passes, as from epoch 40 on), batches of `--batch` with lengths between a third of T and T.
Prints the median samples/s of each, their ratio and the CPU's flags. `--bf16` runs both under
bf16 autocast (the 2nd place trained in bf16).
"""

from __future__ import annotations

import sys

from aslfr.memory import restart_with_allocator

if __name__ == "__main__":  # the allocator `aslfr train` runs with (aslfr.memory), before torch loads
    restart_with_allocator([__file__, *sys.argv[1:]])

import argparse
import statistics
from contextlib import nullcontext
import time

import torch

from train_step import Trainer, alternate_steps, padded_batch

from aslfr.config import preset
from aslfr.ctc_attention import PAD_VALUE
from aslfr.hardware import describe_cpu
from aslfr import joint_training as joint


def joint_batch(batch: int, frames: int) -> dict:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(frames // 3, frames + 1, (batch,), generator=g)
    x = torch.randn(batch, frames, 1629, generator=g)
    x[torch.arange(frames)[None] >= lengths[:, None]] = PAD_VALUE
    tokens = torch.randint(1, 60, (batch, 64), generator=g)
    tokens[:, 20:] = 0
    ctc = tokens.clone()
    return {"features": x, "lengths": lengths, "decoder_in": torch.cat([torch.full((batch, 1), 60), tokens[:, :-1]], 1),
            "att_target": tokens, "ctc_target": ctc}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=16)
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--bf16", action="store_true")
    ap.add_argument("--awp", action="store_true")
    a = ap.parse_args()
    torch.manual_seed(0)
    seed_cfg, joint_cfg = preset("seed-base"), preset("second-place")
    seed = Trainer(seed_cfg)
    x, _ = padded_batch(a.batch, seed_cfg.max_len)
    labels = torch.randint(0, 59, (a.batch, 64))
    label_lengths = torch.full((a.batch,), 20)

    model = joint.build_model(joint_cfg).train()
    opt = joint.make_optimizer(model, joint_cfg)
    batch = joint_batch(a.batch, joint_cfg.max_len)
    autocast = torch.autocast("cpu", dtype=torch.bfloat16) if a.bf16 else nullcontext()

    def joint_step() -> float:
        t = time.perf_counter()
        joint.train_step(model, model, opt, batch, joint_cfg, "cpu", autocast, a.awp)
        return time.perf_counter() - t

    times = alternate_steps(a.steps, {"seed-base": lambda: seed.step(x, labels, label_lengths, a.bf16),
                                      "second-place": joint_step})
    rate = {k: a.batch / statistics.median(v) for k, v in times.items()}
    print(describe_cpu())
    print(f"{torch.get_num_threads()} threads, batch {a.batch}, {'bf16 autocast' if a.bf16 else 'float32'}"
          f"{', AWP' if a.awp else ''}; medians of {a.steps} steps each, alternating")
    for k, v in rate.items():
        shape = f"T={seed_cfg.max_len}" if k == "seed-base" else f"T={joint_cfg.max_len}"
        print(f"  {k:<13} {shape}: {v:6.2f} samples/s ({statistics.median(times[k]) * 1e3:.0f} ms/step)")
    print(f"  second-place / seed-base: {rate['second-place'] / rate['seed-base']:.2f}x")


if __name__ == "__main__":
    main()
