"""Training: the seed's recipe (SEED-SPEC 8) on one CPU, one GPU, or many under torchrun: the
loop, top to bottom. What it reads is `aslfr.data.loader`; checkpoints and the run directory's
identity are `aslfr.checkpoints`; the hardware's choices (bf16, cores) are `aslfr.hardware`, the
matmul kernels `aslfr.kernels`. The 2nd place's recipe (`network=ctc-attention`) runs in the same
loop; what it does differently (its samples, optimiser, schedule per step, AWP, losses and
decoding) is `aslfr.joint_training`.

Run as `aslfr train ...`; under `torchrun --nproc_per_node N` the same command trains with
DistributedDataParallel, each process taking its share of every global batch. Every random
choice of the data side is seeded per (seed, epoch, sample), so the batches and their
augmentations do not depend on workers or processes, and a resumed run on CPU is bitwise the
uninterrupted one.
"""

from __future__ import annotations

import json
import os
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from aslfr.checkpoints import (TrainingError, identity_differences, last_checkpoint, newest_intact_checkpoint,
                               read_identity, run_identity, run_lock, save_checkpoint)
from aslfr.config import Config
from aslfr.data.loader import EpochBatches, Samples, make_loader, select_samples
from aslfr.data.shards import ShardDataset
from aslfr.files import atomic_write, write_json
from aslfr.hardware import bf16_enabled, bf16_reason
from aslfr.kernels import measure_model
from aslfr.kernels import setting as matmul_setting
from aslfr.memory import allocator_in_use
from aslfr.metric import competition_score
from aslfr.model import FingerspellingModel
from aslfr.optim import Lookahead, RAdam, learning_rate
from aslfr import joint_training as joint
from aslfr.score import predictions


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

def validation_scores(model, samples, split: dict[str, np.ndarray], device: str, cfg: Config) -> dict[str, float]:  # noqa: ANN001
    preds = predictions(model, cfg, samples, split["val"], device=device)
    targets = [samples.ds.phrases[i] for i in split["val"]]
    filtered = np.isin(split["val"], split["val_filtered"])
    return {"val_score": competition_score(preds, targets),
            "val_score_filtered": competition_score([p for p, f in zip(preds, filtered) if f],
                                                    [t for t, f in zip(targets, filtered) if f])
            if filtered.any() else float("nan")}


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

@dataclass
class Distributed:
    rank: int = 0
    world: int = 1
    device: str = "cpu"

    @property
    def main(self) -> bool:
        return self.rank == 0


def setup_distributed() -> Distributed:
    """torchrun's environment switches DDP on; nothing else does."""
    if "RANK" not in os.environ:
        return Distributed(device="cuda" if torch.cuda.is_available() else "cpu")
    local = int(os.environ.get("LOCAL_RANK", 0))
    if torch.cuda.is_available():
        torch.cuda.set_device(local)
        dist.init_process_group("nccl")
        device = f"cuda:{local}"
    else:
        dist.init_process_group("gloo")
        device = "cpu"
    return Distributed(dist.get_rank(), dist.get_world_size(), device)

def train(cfg: Config, data: str | Path, out: str | Path, resume: bool = False,
          scores: str | Path | None = None, stop_after_epochs: int | None = None,
          progress: bool = True) -> dict:
    """Train to `cfg.epochs` (or stop after `stop_after_epochs` more, as an interruption would);
    returns the last metrics row. One job at a time in a run directory: a second `train` into
    the same `out` while one runs is refused (the run's lock, `aslfr.checkpoints.run_lock`)."""
    env = setup_distributed()
    cfg.check(env.world)
    matmul_setting()  # a bad ASLFR_MATMUL stops here, before anything is written
    with run_lock(Path(out), hold=env.main):
        return _train(env, cfg, Path(data), Path(out), resume, scores, stop_after_epochs, progress)


def _train(env: Distributed, cfg: Config, data: Path, out: Path, resume: bool, scores: str | Path | None,
           stop_after_epochs: int | None, progress: bool) -> dict:
    if env.main and progress:
        print(f"memory allocator: {allocator_in_use()}")
    torch.manual_seed(cfg.seed)  # the same initial weights on every process
    ds = ShardDataset(data)
    if ds.charmap != cfg.charmap:
        raise TrainingError(f"{data}: prepared with a character map of {len(ds.charmap)} characters "
                            f"({''.join(ds.charmap.tokens[:12])}...), but the model's has {len(cfg.charmap)} "
                            f"({''.join(cfg.charmap.tokens[:12])}...): pass the same --characters to prepare and train")
    stats = ds.stats()  # every checkpoint carries them
    split = select_samples(ds, cfg, Path(scores) if scores else None)

    # The run directory holds one job: continue it, or refuse another one (before writing).
    identity = run_identity(cfg, data, Path(scores) if scores else None)
    found = newest_intact_checkpoint(out, log=print if env.main else None)
    earlier = read_identity(out)
    if earlier is None and found is not None:  # a run from before run.json: its checkpoint's settings
        earlier = {"config": found[1]["config"]}
    if earlier is not None:
        differs = identity_differences(earlier, identity)
        if differs:
            raise TrainingError(f"{out}: holds a run of another job ({'; '.join(differs)}); train into another "
                                f"--out, or delete {out} to start over")
    if len(split["train"]) < cfg.batch_size:
        why = (f"score > {cfg.min_score:g}" if cfg.train_filter == "score" else "the length filter")
        raise TrainingError(f"only {len(split['train'])} training samples remain after {why} "
                            f"({len(split['dropped_by_filter'])} dropped): fewer than one batch of {cfg.batch_size}")
    steps_per_epoch = len(split["train"]) // cfg.batch_size
    joint_net = cfg.network == "ctc-attention"
    if joint_net:
        joint.check_phrases(ds, np.concatenate([split["train"], split["val"]]))
        model = joint.build_model(cfg).to(env.device)
        opt = joint.make_optimizer(model, cfg)
    else:
        model = FingerspellingModel(cfg, steps_per_epoch).to(env.device)
        # Lookahead copies its slow weights here, before DDP would broadcast rank 0's: they agree
        # across processes only because every process drew the same initial weights above
        opt = make_optimizer(model, cfg)
    if env.rank:
        torch.manual_seed(cfg.seed + env.rank)  # each process its own dropout draws
    first_epoch, step = 0, 0
    state = None
    if found is not None:
        ckpt, state = found
        if "optimizer" not in state:
            raise TrainingError(f"{ckpt}: holds no optimiser state (an imported model?); it cannot be continued")
        model.load_state_dict({k: v.to(env.device) for k, v in state["model"].items()})
        opt.load_state_dict(state["optimizer"])
        first_epoch, step = state["epoch"], state["step"]
        if first_epoch > cfg.epochs:
            raise TrainingError(f"{out}: holds a run {first_epoch} epochs long, more than --set epochs={cfg.epochs}; "
                                f"a run cannot be shortened: train into another --out")
        if env.main:
            print(f"continuing {out} from {ckpt.name} (epoch {first_epoch} of {cfg.epochs})")
    elif resume and env.main:
        print(f"no checkpoint in {out / 'checkpoints'}; starting from scratch")
    if env.main:
        (out / "checkpoints").mkdir(parents=True, exist_ok=True)
        write_json(out / "run.json", identity)
        write_json(out / "config.json", cfg.to_dict())
        write_json(out / "split.json", {k: len(v) for k, v in split.items()})
    if first_epoch >= cfg.epochs:
        if env.main:
            print(f"{out} is finished ({first_epoch} of {cfg.epochs} epochs); --set epochs=N with a larger N "
                  f"extends it")
        if env.world > 1:
            dist.destroy_process_group()
        return _last_metrics(out)
    _trim_metrics(out / "metrics.jsonl", first_epoch, env.main)

    net = DistributedDataParallel(model) if env.world > 1 else model
    if cfg.compile:
        net = torch.compile(net)
    if joint_net:
        samples, val_samples = joint.JointSamples(data, cfg, train=True), joint.JointSamples(data, cfg, train=False)
    else:
        samples = Samples(data, cfg, train=True, stats=stats)
        val_samples = Samples(data, cfg, train=False, stats=stats)  # opened once: read at every validation
    last_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, first_epoch + stop_after_epochs)
    batches = EpochBatches(split["train"], cfg.batch_size, cfg.seed, first_epoch, last_epoch, env.rank, env.world)
    loader = make_loader(samples, batches, cfg, env.device, env.world, log=print if env.main else None,
                         collate_fn=(partial(joint.collate, pad_to=None if cfg.pad_to_batch else cfg.max_len)
                                     if joint_net else None))
    use_bf16 = bf16_enabled(cfg.bf16, env.device)
    if env.main and cfg.bf16 == "auto":
        print(f"bf16=auto: {'bf16 autocast' if use_bf16 else 'float32'} on {env.device} "
              f"({bf16_reason(env.device)})")
    autocast = (torch.autocast(env.device.split(":")[0], dtype=torch.bfloat16) if use_bf16 else nullcontext())
    if env.device == "cpu" and not use_bf16:  # float32 on a CPU: the matmul kernels measured fastest here
        kernels = measure_model(model, cfg.batch_size // env.world * cfg.max_len)
        if env.main and progress:
            print(f"matmul kernels: {kernels}")
    row: dict = {}
    batch_iter = iter(loader)  # draws the loader's base seed from the global generator, so...
    if state is not None:  # ...restore the generator after it, as the uninterrupted run had it
        torch.set_rng_state(state["torch_rng"])
    bar = tqdm(total=len(batches), desc="train", disable=not (progress and env.main), dynamic_ncols=True)
    for epoch in range(first_epoch, last_epoch):
        lr = learning_rate(epoch, cfg.epochs, cfg.lr, cfg.warmup_epochs)
        for group in opt.param_groups:
            group["lr"] = lr
        model.train()
        t0, losses = time.time(), []
        awp = joint_net and 0 <= cfg.awp_start_epoch <= epoch and cfg.awp_lr > 0
        for _ in range(steps_per_epoch):
            batch = next(batch_iter)
            if joint_net:  # the learning rate per step; the step's loss is checked after it
                lr = joint.learning_rate(step, steps_per_epoch, cfg)
                for group in opt.param_groups:
                    group["lr"] = lr
                loss = joint.train_step(net, model, opt, batch, cfg, env.device, autocast, awp)
                _check_finite(loss, step, epoch, batch["sequence_ids"], out, env)
            else:
                loss = step_loss(net, batch, cfg, env.device, autocast)
                _check_finite(loss, step, epoch, batch["sequence_ids"], out, env)
                opt.zero_grad()
                loss.backward()
                opt.step()
            step += 1
            losses.append(float(loss.detach()))
            bar.update()
            bar.set_postfix(epoch=epoch, loss=f"{losses[-1]:.3f}", lr=f"{lr:.2e}")
        done = epoch + 1
        epoch_loss = torch.tensor(float(np.mean(losses)), dtype=torch.float64)
        if env.world > 1:  # each process saw its share of every batch: log the global mean
            dist.all_reduce(epoch_loss)
            epoch_loss /= env.world
        row = {"epoch": done, "step": step, "lr": lr, "loss": float(epoch_loss),
               "epoch_seconds": round(time.time() - t0, 2)}
        if done % cfg.eval_every == 0 or done == cfg.epochs:
            if env.main:
                row.update(validation_scores(model, val_samples, split, env.device, cfg))
        if env.main:
            _append_metrics(out, row)
            if done % cfg.checkpoint_every == 0 or done == cfg.epochs or done == last_epoch:
                for name in (f"epoch_{done:05d}.pt", "last.pt"):
                    save_checkpoint(out / "checkpoints" / name, model, opt, cfg, done, step, stats)
        if env.world > 1:
            dist.barrier()
    bar.close()
    if env.world > 1:
        dist.destroy_process_group()
    return row

def _last_metrics(out: Path) -> dict:
    path = out / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return rows[-1] if rows else {}

def make_optimizer(model: torch.nn.Module, cfg: Config) -> Lookahead:
    """SEED-SPEC 8: RAdam (eps 1e-7, rectified from an SMA length of `radam_threshold`) inside
    Lookahead; the learning rate is set per epoch by the loop."""
    return Lookahead(RAdam(model.parameters(), lr=cfg.lr, eps=1e-7, threshold=cfg.radam_threshold),
                     cfg.lookahead_steps, cfg.lookahead_alpha)


def step_loss(net: torch.nn.Module, batch: dict, cfg: Config, device: str, autocast=nullcontext()) -> torch.Tensor:  # noqa: ANN001, B008
    """The batch's mean CTC loss (SEED-SPEC 8): the network under `autocast`, the loss in float32;
    CTC's input length is the padded length, as in the seed, or the real one (`ctc_true_lengths`)."""
    non_blocking = device.startswith("cuda")
    with autocast:
        logits = net(batch["features"].to(device, non_blocking=non_blocking),
                     batch["lengths"].to(device, non_blocking=non_blocking))
    log_probs = F.log_softmax(logits.float(), dim=-1).transpose(0, 1)  # [T, B, C]
    input_lengths = batch["lengths"] if cfg.ctc_true_lengths else torch.full_like(batch["lengths"], logits.shape[1])
    return F.ctc_loss(log_probs, batch["labels"].to(device, non_blocking=non_blocking), input_lengths,
                      batch["label_lengths"], blank=cfg.charmap.blank, reduction="none", zero_infinity=False).mean()


def _check_finite(loss: torch.Tensor, step: int, epoch: int, ids: list[int], out: Path, env: Distributed) -> None:
    bad = torch.tensor(0.0 if torch.isfinite(loss) else 1.0)
    if env.world > 1:
        dist.all_reduce(bad)
    if bad > 0:
        last = last_checkpoint(out)
        kept = f"the last good checkpoint is kept: {last}" if last else "no checkpoint was written yet"
        raise TrainingError(f"loss is {float(loss.detach())} at step {step} (epoch {epoch}); batch sequence_ids "
                            f"{ids}; {kept}")


def _append_metrics(out: Path, row: dict) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    if "val_score" in row:  # redraw only when there is a new validation point
        plot_curves(out / "metrics.jsonl", out / "curves.png")


def _trim_metrics(path: Path, epoch: int, main: bool) -> None:
    """A resumed run rewrites the metrics of the epochs after its checkpoint."""
    if not main or not path.exists():
        return
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    kept = "".join(json.dumps(r) + "\n" for r in rows if r["epoch"] <= epoch)
    atomic_write(path, lambda tmp: Path(tmp).write_text(kept))


def plot_curves(metrics: Path, png: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [json.loads(line) for line in metrics.read_text().splitlines() if line.strip()]
    fig, (a, b, c) = plt.subplots(1, 3, figsize=(13, 3.6))
    a.plot([r["epoch"] for r in rows], [r["loss"] for r in rows])
    a.set(title="training CTC loss", xlabel="epoch", yscale="log")
    ev = [r for r in rows if "val_score" in r]
    b.plot([r["epoch"] for r in ev], [r["val_score"] for r in ev], "o-", label="validation")
    b.plot([r["epoch"] for r in ev], [r["val_score_filtered"] for r in ev], "s--", label="validation, length-filtered")
    b.set(title="competition score", xlabel="epoch")
    b.legend()
    c.plot([r["epoch"] for r in rows], [r["lr"] for r in rows])
    c.set(title="learning rate", xlabel="epoch")
    fig.tight_layout()
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
