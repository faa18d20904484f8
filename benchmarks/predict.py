"""Inference-only work (what `aslfr score` and training's validation run): float32 against bf16
autocast, at a preset's shapes, on this CPU.

    .venv/bin/python benchmarks/predict.py                        # demo, batch 64, T=64
    .venv/bin/python benchmarks/predict.py --preset seed-base --frames 380 --batch 32

Times the network's eval-mode forward under `torch.no_grad()` on a padded batch (lengths between
a third of T and T, zeros after), float32 and under bf16 autocast alternating call by call, with
1 thread and with all of torch's threads, and prints the medians, the ratio and the CPU's flags.
`score` runs float32 (`aslfr.score`): this is the measurement that choice rests on.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch


from aslfr.config import preset
from aslfr.hardware import describe_cpu, native_bf16
from aslfr.model import FingerspellingModel


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="demo")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--frames", type=int, default=None, help="T (default: the preset's max_len)")
    ap.add_argument("--calls", type=int, default=15)
    a = ap.parse_args()
    cfg = preset(a.preset)
    frames = a.frames or cfg.max_len
    torch.manual_seed(0)
    model = FingerspellingModel(cfg).eval()
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(frames // 3, frames + 1, (a.batch,), generator=g)
    x = torch.randn(a.batch, frames, 600, generator=g)
    x[torch.arange(frames)[None] >= lengths[:, None]] = 0
    all_threads = torch.get_num_threads()
    print(f"{a.preset}, batch {a.batch}, T={frames}; CPU: {describe_cpu()}; native bf16: {native_bf16('cpu')}")
    for threads in sorted({1, all_threads}):
        torch.set_num_threads(threads)
        times: dict[str, list[float]] = {"float32": [], "bf16": []}
        with torch.no_grad():
            for i in range(a.calls + 2):
                for name in ("float32", "bf16") if i % 2 else ("bf16", "float32"):
                    t = time.perf_counter()
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=name == "bf16"):
                        model(x, lengths)
                    if i >= 2:
                        times[name].append(time.perf_counter() - t)
        f, b = statistics.median(times["float32"]), statistics.median(times["bf16"])
        print(f"{threads} thread{'s' if threads > 1 else ''}: float32 {f * 1000:.1f} ms a batch, bf16 autocast "
              f"{b * 1000:.1f} ms; bf16 is {f / b:.2f}x float32's speed")
    torch.set_num_threads(all_threads)


if __name__ == "__main__":
    main()
