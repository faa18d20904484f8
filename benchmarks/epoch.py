"""A real-size training epoch on a GPU (or, to check it runs, the CPU): samples/s, the share of
time the model waits for data, and the projection of the seed's 300 + 1,500 epochs.

    .venv/bin/python benchmarks/epoch.py                                # GPU, seed-base, bf16=auto
    .venv/bin/python benchmarks/epoch.py --compile --workers 8          # torch.compile, 8 loader workers
    .venv/bin/python benchmarks/epoch.py --preset seed-final
    .venv/bin/python benchmarks/epoch.py --device cpu --batch 32 --steps 3 --warmup 1
    .venv/bin/python benchmarks/epoch.py --data PREPARED                # e.g. the real data, prepared

The training loop is the training command's own pieces (`aslfr.data.loader.make_loader`, `aslfr.train.step_loss`,
RAdam + Lookahead): the loader's workers read the shards, augment, compute the features and pad
to max_len, as in `aslfr train`. Without `--data` it synthesises and prepares `--sequences`
sequences (cached in `--cache`), and draws a real-size epoch from them by repeating their indices
up to the seed's epoch (SEED-SPEC 8: 48,627 samples for seed-base, 59,884 for seed-final), so the
loader does a real epoch's work on a small set (which then sits in the page cache; the real one,
8 GB of shards, may not).

It times `--steps` steps after `--warmup` (torch.compile compiles in the first ones), each as the
wait for the next batch and the rest (host-to-device copy, forward, loss, backward, optimiser,
ending when the loss reaches the host, as in training). Then it times the loader alone at the
same workers, and the per-sample work (shard read, augmentation, features) on one core in this
process, and says how many workers keep the model fed. The epoch time and the projection are
from the measured steps; the other preset's epochs are scaled by its FLOPs per sample and its
epoch size, and say so.
"""

from __future__ import annotations

import sys

from aslfr.memory import restart_with_allocator

if __name__ == "__main__":  # run with the allocator `aslfr train` runs with (aslfr.memory), before torch loads
    restart_with_allocator([__file__, *sys.argv[1:]])

import argparse
import math
import os
import statistics
import sys
import time
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch


from aslfr.config import preset
from aslfr.data.loader import EpochBatches, Samples, collate, loader_workers, make_loader, select_samples
from aslfr.data.shards import ShardDataset
from aslfr.hardware import available_cores, bf16_enabled, describe_cpu
from aslfr.memory import allocator_in_use
from aslfr.model import FingerspellingModel, flops_per_sequence
from aslfr.train import make_optimizer, step_loss

#: SEED-SPEC 8: samples per epoch, and seconds per epoch on the seed's TPU v2-8
SEED_EPOCH = {"seed-base": (48_627, 300, 32.0), "seed-final": (59_884, 1_500, 44.0)}


def prepared_data(a: argparse.Namespace) -> Path:
    if a.data:
        return Path(a.data)
    cache = Path(a.cache) / f"epoch-{a.sequences}"
    if not (cache / "prepared" / "metadata.parquet").is_file():
        from aslfr.data.prepare import prepare
        from aslfr.data.synthetic import synthesize

        print(f"synthesising {a.sequences} sequences into {cache} (once)", flush=True)
        synthesize(cache / "data", sequences=a.sequences, participants=20, files=20, seed=5,
                   corrupt_fraction=0.0, workers=min(8, available_cores()), progress=False)
        prepare(cache / "data", cache / "prepared", workers=min(8, available_cores()), progress=False)
    return cache / "prepared"


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.1f} h"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="seed-base", choices=list(SEED_EPOCH))
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--batch", type=int, help="global batch (default: the preset's)")
    ap.add_argument("--bf16", default="auto", choices=["true", "false", "auto"])
    ap.add_argument("--compile", action="store_true", help="torch.compile the network")
    ap.add_argument("--workers", default="auto", help="DataLoader workers, or auto (aslfr.data.loader.loader_workers)")
    ap.add_argument("--steps", type=int, default=40, help="timed steps")
    ap.add_argument("--warmup", type=int, default=5, help="untimed steps first (compilation, allocator)")
    ap.add_argument("--data", help="a prepared directory to read instead of synthetic data")
    ap.add_argument("--sequences", type=int, default=2000, help="synthetic sequences (without --data)")
    ap.add_argument("--cache", default=str(Path.home() / ".cache" / "aslfr-bench"))
    a = ap.parse_args()

    sets = [f"workers={a.workers}", f"bf16={a.bf16}", "train_filter=length"]  # (no scores here)
    sets += [f"batch_size={a.batch}"] if a.batch else []
    cfg = preset(a.preset).override(sets)
    device = a.device
    if device.startswith("cuda") and not torch.cuda.is_available():
        sys.exit("no GPU here: run with --device cpu to check the benchmark, or on a machine with one")
    gpu = torch.cuda.get_device_name(device) if device.startswith("cuda") else None
    use_bf16 = bf16_enabled(cfg.bf16, device)
    workers = loader_workers(cfg.workers, device)
    print(f"{a.preset}, batch {cfg.batch_size}, T={cfg.max_len}, device {gpu or 'cpu'}, "
          f"{'bf16 autocast' if use_bf16 else 'float32'}, compile {a.compile}, {workers} loader workers, "
          f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    print(f"CPU: {describe_cpu()}; {available_cores()} cores available; memory allocator: {allocator_in_use()}")

    data = prepared_data(a)
    ds = ShardDataset(data)
    train_idx = select_samples(ds, cfg, None)["train"]
    epoch_samples, epochs, tpu_epoch_s = SEED_EPOCH[a.preset]
    indices = np.resize(train_idx, max(epoch_samples, cfg.batch_size * (a.warmup + a.steps)))  # a real-size epoch
    batches = EpochBatches(indices, cfg.batch_size, cfg.seed, 0, 1)
    samples = Samples(data, cfg, train=True)
    torch.manual_seed(cfg.seed)
    model = FingerspellingModel(cfg, batches.per_epoch).to(device).train()
    opt = make_optimizer(model, cfg)
    net = torch.compile(model) if a.compile else model
    autocast = torch.autocast(device.split(":")[0], dtype=torch.bfloat16) if use_bf16 else nullcontext()
    loader = make_loader(samples, batches, cfg, device)

    waits, steps = [], []
    it = iter(loader)
    for k in range(a.warmup + a.steps):
        t0 = time.perf_counter()
        batch = next(it)
        t1 = time.perf_counter()
        loss = step_loss(net, batch, cfg, device, autocast)
        opt.zero_grad()
        loss.backward()
        opt.step()
        float(loss.detach())  # the host waits for the step, as training's loss log does
        t2 = time.perf_counter()
        if k >= a.warmup:
            waits.append(t1 - t0)
            steps.append(t2 - t0)
        else:
            print(f"warm-up step {k + 1}: {t2 - t0:.2f} s", flush=True)
    del it
    step = statistics.median(steps)
    total, waited = sum(steps), sum(waits)
    rate = cfg.batch_size / step
    compute_rate = cfg.batch_size * len(steps) / (total - waited)
    memory = f", {torch.cuda.max_memory_allocated(device) / 2**30:.1f} GiB of GPU memory" if gpu else ""
    print(f"training: median step {step:.3f} s over {len(steps)} steps, {rate:.1f} samples/s; the model waited for "
          f"data {waited / total:.1%} of the time; without the waits {compute_rate:.1f} samples/s{memory}")

    # the loader alone, at the same workers, then the per-sample work on one core here
    n = min(len(indices) // cfg.batch_size, max(8, 2 * workers))
    alone = make_loader(samples, EpochBatches(indices[: n * cfg.batch_size], cfg.batch_size, cfg.seed, 1, 2), cfg, device)
    it = iter(alone)
    next(it)  # the workers' start-up
    t = time.perf_counter()
    got = sum(len(b["lengths"]) for b in it)
    loader_rate = got / (time.perf_counter() - t)
    torch.set_num_threads(1)
    t = time.perf_counter()
    picked = [samples[(0, int(i))] for i in indices[:256]]
    per_sample = (time.perf_counter() - t) / len(picked)
    t = time.perf_counter()
    collate(picked[: cfg.batch_size], cfg.max_len, cfg.charmap.blank)
    collate_s = time.perf_counter() - t
    per_core = 1 / (per_sample + collate_s / cfg.batch_size)
    needed = math.ceil(compute_rate / per_core)
    print(f"loader alone, {workers} workers: {loader_rate:.0f} samples/s; one core: {1 / per_sample:.0f} samples/s "
          f"(read, augment, features), collate of {cfg.batch_size} at T={cfg.max_len} {collate_s * 1e3:.0f} ms, "
          f"so {per_core:.0f} samples/s per worker")
    print(f"to feed {compute_rate:.0f} samples/s the loader needs about {needed} workers "
          f"(workers=auto gives {loader_workers(-1, device)} here)")

    epoch_s = epoch_samples / rate
    other = "seed-final" if a.preset == "seed-base" else "seed-base"
    o_samples, o_epochs, o_tpu = SEED_EPOCH[other]
    o_cfg = preset(other)
    scale = flops_per_sequence(o_cfg, o_cfg.max_len) / flops_per_sequence(cfg, cfg.max_len)
    o_epoch_s = o_samples / (rate / scale)
    ours = {a.preset: (epochs, epoch_s, "measured"), other: (o_epochs, o_epoch_s, f"scaled by FLOPs, x{scale:.2f}")}
    print()
    print("| model | epochs | epoch here | epoch on TPU v2-8 | all epochs here | on the TPU | how |")
    print("|---|---|---|---|---|---|---|")
    tpu = {a.preset: tpu_epoch_s, other: o_tpu}
    for name in ("seed-base", "seed-final"):
        e, s, how = ours[name]
        print(f"| {name} | {e} | {s:.0f} s | {tpu[name]:.0f} s | {hours(e * s)} | {hours(e * tpu[name])} | {how} |")
    all_here = sum(e * s for e, s, _ in ours.values())
    all_tpu = sum(SEED_EPOCH[k][1] * SEED_EPOCH[k][2] for k in SEED_EPOCH)
    ratio = all_tpu / all_here
    print(f"| both | | | | **{hours(all_here)}** | {hours(all_tpu)} | "
          + (f"{ratio:.2f}x the TPU's speed |" if ratio >= 0.1 else f"the TPU is {1 / ratio:.0f}x faster |"))
    sys.stdout.flush()
    os._exit(0)  # no waiting on the loaders' teardown


if __name__ == "__main__":
    main()
