"""Training: the seed's recipe (SEED-SPEC 8) on one CPU, one GPU, or many under torchrun.

Run as `aslfr train ...`; under `torchrun --nproc_per_node N` the same command trains with
DistributedDataParallel, each process taking its share of every global batch. Every random
choice of the data side is seeded per (seed, epoch, sample), so the batches and their
augmentations do not depend on workers or processes, and a resumed run on CPU is bitwise the
uninterrupted one.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
import time
from contextlib import nullcontext
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from aslfr.augment import augment
from aslfr.config import Config
from aslfr.data.shards import ShardDataset, atomic_write, write_json
from aslfr.features import sample_features
from aslfr.hardware import available_cores, bf16_enabled, bf16_reason
from aslfr.kernels import measure_model
from aslfr.kernels import setting as matmul_setting
from aslfr.memory import allocator_in_use
from aslfr.metric import competition_score
from aslfr.model import FingerspellingModel
from aslfr.optim import Lookahead, RAdam, learning_rate
from aslfr.vocab import MAX_PHRASE


class TrainingError(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# Which samples train and which validate
# --------------------------------------------------------------------------------------------

def passes_length_filter(ds: ShardDataset) -> np.ndarray:
    """SEED-SPEC 7.1: 2 * len(phrase) < max(right-hand frames, left-hand frames)."""
    hands = np.maximum(ds.meta["n_right_hand_frames"], ds.meta["n_left_hand_frames"])
    return 2 * np.array([len(p) for p in ds.phrases]) < hands


def validation_mask(ds: ShardDataset, cfg: Config) -> np.ndarray:
    """The seed's split: the first int(val_fraction * files) file_ids in sorted order (at least
    one); or, stricter, a seeded choice of participants; or, with `folds` K > 1, participant fold
    `fold` of K (out-of-fold scoring)."""
    if cfg.split not in ("file", "participant"):
        raise ValueError(f"split {cfg.split!r}: expected 'file' or 'participant'")
    key = "file_id" if cfg.split == "file" and cfg.folds <= 1 else "participant_id"
    groups = np.unique(ds.meta[key])
    if cfg.folds > 1:
        if not 0 <= cfg.fold < cfg.folds:
            raise ValueError(f"fold={cfg.fold}: expected 0 to {cfg.folds - 1}")
        # every sample of the fold's participants, supplemental too: no fold model sees them
        return np.isin(ds.meta[key], participant_folds(groups, cfg.folds, cfg.seed)[cfg.fold])
    else:
        if len(groups) < 2:
            raise ValueError(f"cannot hold out validation data: only {len(groups)} {key} in the data")
        n_val = max(1, int(cfg.val_fraction * len(groups)))
        chosen = groups[:n_val] if cfg.split == "file" else np.random.default_rng(cfg.seed).permutation(groups)[:n_val]
    return np.isin(ds.meta[key], chosen) & (ds.meta["source"] == "train")


def participant_folds(participants: np.ndarray, folds: int, seed: int) -> list[np.ndarray]:
    """A seeded partition of the participants into `folds` groups of near-equal size."""
    participants = np.unique(participants)
    if not 1 < folds <= len(participants):
        raise ValueError(f"folds={folds}: need 2 to {len(participants)} (the number of participants)")
    order = np.random.default_rng(seed).permutation(participants)
    return [np.sort(f) for f in np.array_split(order, folds)]


def read_scores(path: Path, ds: ShardDataset) -> np.ndarray:
    """Per-sample scores joined by sequence_id; every training candidate must have one."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"{path}: scores file not found (write it with 'aslfr score')")
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise ValueError(f"{path}: not a readable scores parquet ({str(e).splitlines()[0]})") from None
    missing = [c for c in ("sequence_id", "score") if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: no {' or '.join(missing)} column (it has {', '.join(table.column_names)}); "
                         f"expected the output of 'aslfr score'")
    scores = dict(zip(table.column("sequence_id").to_pylist(), table.column("score").to_pylist()))
    ids = ds.meta["sequence_id"].tolist()
    missing = [s for s in ids if s not in scores]
    if missing:
        raise ValueError(f"{path}: {len(missing)} of {len(ids)} samples have no score "
                         f"(first missing sequence_id {missing[0]}); score the same prepared data")
    return np.array([scores[s] for s in ids], dtype=np.float64)


def select_samples(ds: ShardDataset, cfg: Config, scores_path: Path | None) -> dict[str, np.ndarray]:
    val = validation_mask(ds, cfg)
    if cfg.train_filter == "length":
        keep = passes_length_filter(ds)
    elif cfg.train_filter == "score":
        if scores_path is None:
            raise ValueError("train_filter=score needs --scores (from 'aslfr score')")
        keep = read_scores(scores_path, ds) > cfg.min_score
    else:
        raise ValueError(f"train_filter {cfg.train_filter!r}: expected 'length' or 'score'")
    return {"train": np.flatnonzero(~val & keep), "val": np.flatnonzero(val),
            "val_filtered": np.flatnonzero(val & passes_length_filter(ds)),
            "dropped_by_filter": np.flatnonzero(~val & ~keep)}


# --------------------------------------------------------------------------------------------
# Data
# --------------------------------------------------------------------------------------------

class Samples(Dataset):
    """Items are (epoch, sample index) pairs so that augmentation is seeded by both."""

    def __init__(self, root: Path, cfg: Config, train: bool,
                 stats: tuple[np.ndarray, np.ndarray] | None = None) -> None:
        """`stats`: the normalisation a trained model was trained with (its checkpoint's);
        by default the prepared data's own."""
        self.root, self.cfg, self.train = root, cfg, train
        self.charmap = cfg.charmap
        self._ds: ShardDataset | None = None
        mean, std = stats if stats is not None else self.ds.stats()
        self.mean = torch.as_tensor(np.asarray(mean), dtype=torch.float32)
        self.std = torch.as_tensor(np.asarray(std), dtype=torch.float32)

    @property
    def ds(self) -> ShardDataset:
        if self._ds is None:  # opened lazily: each worker maps the shards itself
            self._ds = ShardDataset(self.root)
        return self._ds

    def __len__(self) -> int:
        return len(self.ds)

    def __getitem__(self, item: tuple[int, int]) -> dict:
        epoch, i = item
        coords = self.ds.coords(i)
        if self.train and self.cfg.augment:
            coords = augment(coords, np.random.default_rng([self.cfg.seed, epoch, i]))
        feats = sample_features(torch.from_numpy(np.ascontiguousarray(coords)), self.mean, self.std, self.cfg.max_len)
        return {"features": feats, "labels": torch.from_numpy(self.charmap.encode(self.ds.phrases[i])),
                "sequence_id": int(self.ds.meta["sequence_id"][i])}


def collate(items: list[dict], pad_to: int | None, blank: int) -> dict:
    """Pad features with 0 (to `pad_to`, or the longest item) and labels with the blank (59 for
    the competition's map) to 64."""
    lengths = torch.tensor([len(it["features"]) for it in items])
    t = pad_to or int(lengths.max())
    feats = torch.zeros(len(items), t, items[0]["features"].shape[1])
    if torch.utils.data.get_worker_info() is not None:  # straight into shared memory: sending a
        feats.share_memory_()                          # batch to the trainer then copies nothing
    labels = torch.full((len(items), MAX_PHRASE), blank, dtype=torch.long)
    for k, it in enumerate(items):
        feats[k, : len(it["features"])] = it["features"]
        labels[k, : len(it["labels"])] = it["labels"]
    return {"features": feats, "lengths": lengths, "labels": labels,
            "label_lengths": torch.tensor([len(it["labels"]) for it in items]),
            "sequence_ids": [it["sequence_id"] for it in items]}


class EpochBatches:
    """This process's share of every global batch, epoch after epoch: a seeded full shuffle per
    epoch, global batches of `batch_size`, the last partial one dropped."""

    def __init__(self, indices: np.ndarray, batch_size: int, seed: int, first_epoch: int,
                 epochs: int, rank: int = 0, world: int = 1) -> None:
        if batch_size % world:
            raise ValueError(f"global batch {batch_size} does not split over {world} processes")
        self.indices, self.batch, self.seed = indices, batch_size, seed
        self.first, self.epochs, self.rank, self.world = first_epoch, epochs, rank, world
        self.per_epoch = len(indices) // batch_size
        if self.per_epoch == 0:
            raise ValueError(f"{len(indices)} training samples do not fill one batch of {batch_size}")

    def __len__(self) -> int:
        return self.per_epoch * (self.epochs - self.first)

    def __iter__(self):
        local = self.batch // self.world
        for epoch in range(self.first, self.epochs):
            order = self.indices[np.random.default_rng([self.seed, epoch]).permutation(len(self.indices))]
            for b in range(self.per_epoch):
                start = b * self.batch + self.rank * local
                yield [(epoch, int(i)) for i in order[start:start + local]]


# --------------------------------------------------------------------------------------------
# Evaluation
# --------------------------------------------------------------------------------------------

@torch.no_grad()
def predict(model: torch.nn.Module, samples: Samples, indices: np.ndarray, batch_size: int = 64,
            device: str = "cpu", progress: bool = False, bf16: bool = False) -> list[str]:
    """Greedy CTC predictions of `indices` (in that order), decoding each up to its real length;
    under bf16 autocast with `bf16` (training's validation stays float32, the exported model's
    precision)."""
    model.eval()
    order = np.argsort([int(samples.ds.meta["n_frames"][i]) for i in indices])
    out: list[str] = [""] * len(indices)
    for s in tqdm(range(0, len(order), batch_size), desc="predict", disable=not progress, leave=False):
        chunk = order[s:s + batch_size]
        batch = collate([samples[(0, int(indices[k]))] for k in chunk], None, samples.charmap.blank)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch["features"].to(device), batch["lengths"].to(device))
        best = logits.float().argmax(-1).cpu().numpy()
        for k, row, n in zip(chunk, best, batch["lengths"].tolist()):
            out[k] = samples.charmap.ctc_greedy(row[:n])
    return out


def validation_scores(model, samples: Samples, split: dict[str, np.ndarray], device: str) -> dict[str, float]:
    preds = predict(model, samples, split["val"], device=device)
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


def _save_checkpoint(path: Path, model, opt: Lookahead, cfg: Config, epoch: int, step: int,
                     stats: tuple[np.ndarray, np.ndarray]) -> None:
    """The checkpoint carries the normalisation statistics, so it alone defines the model."""
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "config": cfg.to_dict(),
             "epoch": epoch, "step": step, "torch_rng": torch.get_rng_state(),
             "stats": {"mean": stats[0], "std": stats[1]}}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def last_checkpoint(run_dir: Path) -> Path | None:
    path = run_dir / "checkpoints" / "last.pt"
    return path if path.is_file() else None


def _epoch_checkpoints(folder: Path) -> list[Path]:
    """epoch_*.pt in `folder`, newest first."""
    return sorted(folder.glob("epoch_*.pt"), key=lambda p: p.name, reverse=True)


def _epoch_of(path: Path) -> int:
    return int(path.stem.split("_")[1])


def _first_readable(paths: list[Path], device: str = "cpu", log=None) -> tuple[Path, dict] | None:  # noqa: ANN001
    """The first of `paths` that reads as a checkpoint, with its contents; each unreadable one
    is passed over, saying so through `log`."""
    for path in paths:
        try:
            return path, read_checkpoint(path, device)
        except TrainingError as e:
            if log:
                log(f"warning: {e}; passing over it")
    return None


def newest_intact_checkpoint(run_dir: Path, log=None) -> tuple[Path, dict] | None:  # noqa: ANN001
    """The run's newest checkpoint that reads, with its contents: last.pt, unless an epoch file
    is newer (a run stopped between writing the two), else the newest epoch_*.pt that reads."""
    folder = run_dir / "checkpoints"
    epochs = _epoch_checkpoints(folder)
    last = _first_readable([folder / "last.pt"], log=log) if (folder / "last.pt").is_file() else None
    if last is not None and not (epochs and _epoch_of(epochs[0]) > last[1].get("epoch", 0)):
        return last
    found = [c for c in (last, _first_readable(epochs, log=log)) if c is not None]
    return max(found, key=lambda c: c[1].get("epoch", 0)) if found else None


#: Settings a run may change when it continues: how long it trains (the cosine schedule then
#: runs to the new end from where the run is) and how often it validates and saves.
CONTINUABLE = ("epochs", "eval_every", "checkpoint_every", "workers", "compile")


def file_digest(path: Path | None) -> str | None:
    if path is None:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_identity(cfg: Config, data: Path, scores: Path | None) -> dict:
    """What makes a run the same job: its settings, the prepared data (its metadata and
    statistics, by content) and the scores it filters with."""
    return {"config": cfg.to_dict(),
            "data": {"path": str(data), "metadata": file_digest(data / "metadata.parquet"),
                     "stats": file_digest(data / "stats.npz")},
            "scores": None if scores is None else {"path": str(scores), "sha256": file_digest(scores)}}


def identity_differences(old: dict, new: dict) -> list[str]:
    """What differs between two runs' identities, in words (settings that may change on
    continuing are not differences)."""
    out = []
    a, b = json.loads(json.dumps(old.get("config", {}))), json.loads(json.dumps(new["config"]))  # tuples as lists
    for key in sorted(set(a) | set(b)):
        if key not in CONTINUABLE and a.get(key) != b.get(key):
            out.append(f"{key} {a.get(key)!r} -> {b.get(key)!r}")
    if "data" in old and (old["data"]["metadata"], old["data"]["stats"]) != (new["data"]["metadata"], new["data"]["stats"]):
        out.append(f"data {old['data']['path']} -> {new['data']['path']} (other prepared data)")
    if "scores" in old and (old["scores"] or {}).get("sha256") != (new["scores"] or {}).get("sha256"):
        out.append(f"scores {(old['scores'] or {}).get('path')} -> {(new['scores'] or {}).get('path')} (other scores)")
    return out


def read_checkpoint(path: Path, device: str = "cpu") -> dict:
    """A checkpoint's contents, read as data: tensors, numbers, strings, containers and float
    numpy arrays only (PyTorch's weights-only unpickler), so that a file from elsewhere cannot
    run code."""
    allowed = [np.ndarray, np.dtype, np.dtypes.Float32DType, np.dtypes.Float64DType,
               getattr(np, "_core", np.core).multiarray._reconstruct]
    try:
        with torch.serialization.safe_globals(allowed):
            state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such checkpoint") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise TrainingError(f"{path}: not a readable aslfr checkpoint ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200]})") from None
    if not isinstance(state, dict) or not {"model", "config"} <= set(state):
        raise TrainingError(f"{path}: not an aslfr checkpoint (no 'model' and 'config' entries)")
    return state


def load_model(checkpoint: Path, device: str = "cpu"
               ) -> tuple[FingerspellingModel, Config, tuple[np.ndarray, np.ndarray] | None]:
    """The model, its settings and the normalisation statistics it was trained with (None for a
    checkpoint written before they were stored). Trained and imported (`aslfr import-keras`)
    checkpoints load the same way."""
    checkpoint = Path(checkpoint)
    try:
        state = read_checkpoint(checkpoint, device)
    except TrainingError as e:
        # a cut-off last.pt (or epoch file) with intact epoch checkpoints beside it
        older = [p for p in _epoch_checkpoints(checkpoint.parent) if p.name != checkpoint.name
                 and (checkpoint.name == "last.pt" or p.name < checkpoint.name)]
        found = _first_readable(older, device)
        if found is None:
            raise
        print(f"warning: {e}; using {found[0]} instead", file=sys.stderr)
        checkpoint, state = found
    cfg = Config.from_dict(state["config"])
    model = FingerspellingModel(cfg).to(device)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise TrainingError(f"{checkpoint}: its weights do not fit its settings ({str(e).splitlines()[0]})") from None
    stats = (state["stats"]["mean"], state["stats"]["std"]) if "stats" in state else None
    return model.eval(), cfg, stats


def train(cfg: Config, data: str | Path, out: str | Path, resume: bool = False,
          scores: str | Path | None = None, stop_after_epochs: int | None = None,
          progress: bool = True) -> dict:
    """Train to `cfg.epochs` (or stop after `stop_after_epochs` more, as an interruption would);
    returns the last metrics row."""
    env = setup_distributed()
    cfg.check(env.world)
    matmul_setting()  # a bad ASLFR_MATMUL stops here, before anything is written
    if env.main and progress:
        print(f"memory allocator: {allocator_in_use()}")
    data, out = Path(data), Path(out)
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
    earlier = _read_identity(out)
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
    samples = Samples(data, cfg, train=True, stats=stats)
    val_samples = Samples(data, cfg, train=False, stats=stats)  # opened once: read at every validation
    last_epoch = cfg.epochs if stop_after_epochs is None else min(cfg.epochs, first_epoch + stop_after_epochs)
    batches = EpochBatches(split["train"], cfg.batch_size, cfg.seed, first_epoch, last_epoch, env.rank, env.world)
    loader = make_loader(samples, batches, cfg, env.device, env.world, log=print if env.main else None)
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
        for _ in range(steps_per_epoch):
            batch = next(batch_iter)
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
                row.update(validation_scores(model, val_samples, split, env.device))
        if env.main:
            _append_metrics(out, row)
            if done % cfg.checkpoint_every == 0 or done == cfg.epochs or done == last_epoch:
                for name in (f"epoch_{done:05d}.pt", "last.pt"):
                    _save_checkpoint(out / "checkpoints" / name, model, opt, cfg, done, step, stats)
        if env.world > 1:
            dist.barrier()
    bar.close()
    if env.world > 1:
        dist.destroy_process_group()
    return row


def _read_identity(out: Path) -> dict | None:
    path = out / "run.json"
    if path.is_file():
        return json.loads(path.read_text())
    if (out / "config.json").is_file():  # a run from before run.json
        return {"config": json.loads((out / "config.json").read_text())}
    return None


def _last_metrics(out: Path) -> dict:
    path = out / "metrics.jsonl"
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []
    return rows[-1] if rows else {}


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # workers augment; the main process keeps the cores for the model


def loader_workers(setting: int, device: str, world: int = 1) -> int:
    """DataLoader worker processes for `workers` = `setting`; -1 (auto): on a CPU one, since the
    model takes every core and the loader's work is about 1% of a step there (a seed-base sample
    costs about 1.6 ms to load and 300 ms to train on); on a GPU, every core of this process's
    share but one (the one feeding the GPU), at most 16: a GPU can train seed-base at thousands of
    samples/s, which takes several loader cores at 300-600 samples/s each (`benchmarks/epoch.py`
    measures both)."""
    if setting >= 0:
        return setting
    if not device.startswith("cuda"):
        return 1
    return max(1, min(16, available_cores() // max(1, world) - 1))


def make_loader(samples: Samples, batches: "EpochBatches", cfg: Config, device: str, world: int = 1,
                log=None) -> DataLoader:  # noqa: ANN001
    """The training DataLoader: `batches` of `samples`, augmented and collated in worker
    processes, padded to `max_len` (the seed's shapes) or to the batch's longest sample."""
    workers = loader_workers(cfg.workers, device, world)
    if log and cfg.workers < 0:
        log(f"workers=auto: {workers} loader process{'es' if workers != 1 else ''} on {device} "
            f"({available_cores()} cores available)")
    pad_to = None if cfg.pad_to_batch else cfg.max_len
    return DataLoader(samples, batch_sampler=batches, num_workers=workers,
                      collate_fn=partial(collate, pad_to=pad_to, blank=cfg.charmap.blank), worker_init_fn=_one_thread,
                      prefetch_factor=4 if workers else None, pin_memory=device.startswith("cuda"))


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
