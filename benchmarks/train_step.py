"""Training throughput of `seed-base` on this machine's CPU.

    .venv/bin/python benchmarks/train_step.py [--batch 32] [--frames 380] [--steps 5]
    .venv/bin/python benchmarks/train_step.py --ab [--steps 5]
    .venv/bin/python benchmarks/train_step.py --keras [--steps 5]
    .venv/bin/python benchmarks/train_step.py --bf16 [--steps 3] [--keras]
    .venv/bin/python benchmarks/train_step.py --profile [--bf16]
    .venv/bin/python benchmarks/train_step.py --matmul [--steps 5]

Times full optimiser steps (forward, CTC loss, backward, RAdam + Lookahead) on a padded batch
(lengths drawn between a third of T and T, zeros after, as the loader pads) and prints the
median samples per second and the achieved GFLOP/s, from the counted FLOPs of the network
(forward x 3 for forward plus backward).

`--ab` alternates, step by step in one run, the preset as it is (the seed's content mask in the
stem and stage 1 and BatchNorm statistics per group of `bn_group` samples) with the same network
and weights without them (plain whole-batch BatchNorm, no mask), and prints what the seed's
masking and grouping cost.

`--keras` also times the same network's training step built in TensorFlow/Keras
(`keras_train_step.py`, in the converter environment) on the same batch shape and thread count,
and prints the ratio; the float32 limit is then the best matmul rate either library reaches at
the network's shape.

`--matmul` alternates steps on PyTorch's BLAS alone (`ASLFR_MATMUL=blas`, PyTorch's default)
with steps on the kernels `aslfr.kernels` measured fastest here (what training runs with), and
prints both, the ratio and the kernels chosen.

`--bf16` alternates float32 steps with bf16-autocast steps (float32 weights and loss, what
`--set bf16=true` trains with) and prints the ratio beside the CPU's bf16 extensions: without
AVX512_BF16 or AMX the CPU emulates bf16, which is why `bf16=auto` leaves it off there.
"""

from __future__ import annotations

import sys

from aslfr.memory import restart_with_allocator

if __name__ == "__main__":  # run with the allocator `aslfr train` runs with (aslfr.memory), before torch loads
    restart_with_allocator([__file__, *sys.argv[1:]])

import argparse
import dataclasses
import os
import statistics
import time

import torch
import torch.nn.functional as F

from machine import sgemm_gflops

from aslfr.config import preset
from aslfr.hardware import describe_cpu
from aslfr.memory import allocator_in_use
from aslfr.model import FingerspellingModel, flops_per_sequence
from aslfr.train import make_optimizer
from aslfr.vocab import BLANK


def padded_batch(batch: int, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    lengths = torch.randint(frames // 3, frames + 1, (batch,), generator=g)
    x = torch.randn(batch, frames, 600, generator=g)
    x[torch.arange(frames)[None] >= lengths[:, None]] = 0
    return x, lengths


class Trainer:
    def __init__(self, cfg, state: dict | None = None) -> None:
        self.model = FingerspellingModel(cfg).train()
        if state is not None:
            self.model.load_state_dict(state)
        self.opt = make_optimizer(self.model, cfg)  # the training command's

    def step(self, x: torch.Tensor, labels: torch.Tensor, label_lengths: torch.Tensor, bf16: bool = False) -> float:
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            logits = self.model(x).float()
        input_lengths = torch.full((x.shape[0],), x.shape[1])
        loss = F.ctc_loss(F.log_softmax(logits, -1).transpose(0, 1), labels, input_lengths, label_lengths,
                          blank=BLANK, reduction="none").mean()
        self.opt.zero_grad()
        loss.backward()
        self.opt.step()
        return time.perf_counter() - t


def alternate_steps(steps: int, variants: dict) -> dict[str, list[float]]:  # noqa: ANN001
    """Each of `variants` (name -> a function timing one step) step by step in turn, the order
    swapped every round, for `steps` rounds after one untimed round (allocators, kernels, the
    matmul kernels' measurements): the step times per name."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for i in range(steps + 1):
        for name in names if i % 2 else names[::-1]:
            t = variants[name]()
            if i:
                times[name].append(t)
    return times


def keras_step(a: argparse.Namespace, threads: int) -> dict:
    import json
    import subprocess
    import sys
    from pathlib import Path

    from aslfr.export import converter_python

    python = converter_python()
    if not python.is_file():
        sys.exit("--keras needs the converter environment (make tools)")
    here = Path(__file__).resolve().parent
    tf_env = dict(os.environ)
    if a.keras_allocator == "system":  # TensorFlow as it is installed: the C library's malloc
        for key in ("LD_PRELOAD", "MALLOC_CONF"):
            tf_env.pop(key, None)
    run = subprocess.run([str(python), str(here / "keras_train_step.py"), "--stages", str(preset(a.preset).stages),
                          "--batch", str(a.batch), "--frames", str(a.frames), "--steps", str(a.steps),
                          "--threads", str(threads)], capture_output=True, text=True, cwd=here,
                         env={**tf_env, "TF_CPP_MIN_LOG_LEVEL": "2", "CUDA_VISIBLE_DEVICES": ""})
    if run.returncode != 0:
        sys.exit(f"keras_train_step.py failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


#: the ops that are matrix products: BLAS's, and oneDNN's that aslfr.kernels chooses where faster
MATMUL_OPS = ("aten::mm", "aten::addmm", "aten::bmm", "mkldnn::_linear_pointwise", "aten::mkldnn_linear_backward_weights")


def profile_step(trainer: Trainer, x: torch.Tensor, labels: torch.Tensor, label_lengths: torch.Tensor,
                 bf16: bool = False) -> None:
    """One step under torch.profiler after a warm-up step: each op's own CPU time and share, the
    matmuls' together, and the time outside any op (Python, the allocator's page faults)."""
    from torch.profiler import ProfilerActivity, profile

    trainer.step(x, labels, label_lengths, bf16=bf16)
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        wall = trainer.step(x, labels, label_lengths, bf16=bf16)
    ops = sorted(prof.key_averages(), key=lambda e: e.self_cpu_time_total, reverse=True)
    total = sum(e.self_cpu_time_total for e in ops) / 1e6
    matmul = sum(e.self_cpu_time_total for e in ops if e.key in MATMUL_OPS) / 1e6
    print(f"one step: {wall:.2f} s wall; the ops' own time {total:.2f} s, of which matmuls ({', '.join(MATMUL_OPS)}) "
          f"{matmul:.2f} s ({matmul / total:.0%}); outside any op {max(0.0, wall - total):.2f} s "
          f"({max(0.0, wall - total) / wall:.1%} of the wall time)")
    print("| op | own time, s | share | calls |")
    print("|---|---|---|---|")
    for e in ops[:15]:
        print(f"| {e.key} | {e.self_cpu_time_total / 1e6:.3f} | {e.self_cpu_time_total / 1e6 / total:.1%} | {e.count} |")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="seed-base")
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=380)
    ap.add_argument("--steps", type=int, default=5)
    ap.add_argument("--ab", action="store_true", help="the seed's masked, grouped BatchNorm against plain BatchNorm")
    ap.add_argument("--keras", action="store_true", help="also time the TensorFlow/Keras build's training step")
    ap.add_argument("--bf16", action="store_true", help="float32 steps against bf16-autocast steps")
    ap.add_argument("--keras-allocator", choices=["system", "same"], default="system",
                    help="TensorFlow with the C library's malloc (as installed) or this process's allocator")
    ap.add_argument("--matmul", action="store_true",
                    help="BLAS alone against the matmul kernels measured fastest here (aslfr.kernels)")
    ap.add_argument("--profile", action="store_true", help="where a step's time goes, per op (torch.profiler)")
    a = ap.parse_args()
    torch.manual_seed(0)
    cfg = preset(a.preset)
    try:
        cfg.override([f"batch_size={a.batch}"]).check()
    except ValueError as e:
        sys.exit(f"--batch {a.batch}: {e}")
    x, _ = padded_batch(a.batch, a.frames)
    labels = torch.randint(0, BLANK, (a.batch, 64))
    label_lengths = torch.full((a.batch,), 20)
    print(f"{a.preset}, batch {a.batch}, T={a.frames}, {torch.get_num_threads()} threads, torch {torch.__version__}")
    print(f"CPU: {describe_cpu()}; memory allocator: {allocator_in_use()}")
    flops = 3 * flops_per_sequence(cfg, a.frames) * a.batch
    if a.profile:  # --profile --bf16: a bf16-autocast step
        profile_step(Trainer(cfg), x, labels, label_lengths, bf16=a.bf16)
        return
    if a.bf16:
        from aslfr.hardware import native_bf16

        trainer = Trainer(cfg)
        times = alternate_steps(a.steps, {"float32": lambda: trainer.step(x, labels, label_lengths),
                                          "bf16": lambda: trainer.step(x, labels, label_lengths, bf16=True)})
        f, b = statistics.median(times["float32"]), statistics.median(times["bf16"])
        print(f"float32: median step {f:.2f} s, {a.batch / f:.2f} samples/s; bf16 autocast: {b:.2f} s, "
              f"{a.batch / b:.2f} samples/s; bf16 is {f / b:.2f}x float32's speed; "
              f"native bf16 on this CPU: {native_bf16('cpu')} (bf16=auto uses it only then)")
        if a.keras:  # --bf16 --keras: both against the TensorFlow build's float32 step, in one run
            keras = keras_step(a, torch.get_num_threads())
            print(f"TensorFlow/Keras {keras['tensorflow']} float32 (graph mode, no XLA; {keras['allocator']}): median step "
                  f"{keras['step_s']:.2f} s ({', '.join(map(str, keras['steps']))}), {keras['samples_per_s']:.2f} samples/s")
            print(f"against TensorFlow float32: aslfr float32 {keras['step_s'] / f:.2f}x, aslfr bf16 {keras['step_s'] / b:.2f}x")
        return
    if a.matmul:
        from aslfr.kernels import CHOOSER, ENV

        trainer = Trainer(cfg)

        def on(setting: str):  # noqa: ANN202
            def step() -> float:
                os.environ[ENV] = setting
                return trainer.step(x, labels, label_lengths)
            return step

        times = alternate_steps(a.steps, {"blas": on("blas"), "auto": on("auto")})
        os.environ[ENV] = "auto"
        b, k = statistics.median(times["blas"]), statistics.median(times["auto"])
        print(f"BLAS alone: median step {b:.2f} s, {a.batch / b:.2f} samples/s ({', '.join(f'{t:.2f}' for t in times['blas'])})")
        print(f"measured kernels: median step {k:.2f} s, {a.batch / k:.2f} samples/s "
              f"({', '.join(f'{t:.2f}' for t in times['auto'])}); {b / k:.2f}x BLAS alone")
        print(f"matmul kernels: {CHOOSER.summary()}")
        return
    if a.ab:
        seed = Trainer(cfg)
        plain_cfg = dataclasses.replace(cfg, content_mask=False, bn_group=0)
        plain = Trainer(plain_cfg, seed.model.state_dict())
        times = alternate_steps(a.steps, {"seed": lambda: seed.step(x, labels, label_lengths),
                                          "plain": lambda: plain.step(x, labels, label_lengths)})
        s, p = statistics.median(times["seed"]), statistics.median(times["plain"])
        print(f"content mask + BatchNorm groups of {cfg.bn_group}: median step {s:.3f} s "
              f"({', '.join(f'{t:.2f}' for t in times['seed'])})")
        print(f"plain whole-batch BatchNorm, no mask:     median step {p:.3f} s "
              f"({', '.join(f'{t:.2f}' for t in times['plain'])})")
        print(f"cost of the seed's masking and grouping: {s / p - 1:+.1%} of a step (goal: at most +5%)")
        return
    trainer = Trainer(cfg)
    times = [trainer.step(x, labels, label_lengths) for _ in range(a.steps + 1)][1:]
    step = statistics.median(times)
    from aslfr.kernels import CHOOSER

    print(f"median step: {step:.2f} s over {a.steps} steps; matmul kernels: {CHOOSER.summary()}")
    print(f"throughput: {a.batch / step:.2f} samples/s")
    print(f"achieved: {flops / step / 1e9:.1f} GFLOP/s ({flops / a.batch / 1e9:.1f} GFLOPs per sample, forward + backward)")
    peak = sgemm_gflops(a.batch * a.frames, cfg.dim, cfg.dim * cfg.expand)  # the network's own shape
    best = {"PyTorch": peak}
    if a.keras:
        keras = keras_step(a, torch.get_num_threads())
        best["TensorFlow"] = keras["matmul_gflops"]
        print(f"TensorFlow/Keras {keras['tensorflow']} (graph mode, no XLA; {keras['allocator']}), same batch: median step "
              f"{keras['step_s']:.2f} s ({', '.join(map(str, keras['steps']))}), {keras['samples_per_s']:.2f} samples/s, "
              f"{flops / keras['step_s'] / 1e9:.1f} GFLOP/s")
        print(f"PyTorch / TensorFlow: {keras['step_s'] / step:.2f}x the TensorFlow build's samples/s")
    lib, rate = max(best.items(), key=lambda kv: kv[1])
    print("float32 matmul at the network's shape, " + ", ".join(f"{k} {v:.0f} GFLOP/s" for k, v in best.items())
          + f": the limit is {lib}'s, {rate * 1e9 / (flops / a.batch):.1f} samples/s; achieved "
          f"{flops / step / 1e9 / rate:.0%} of it")


if __name__ == "__main__":
    main()
