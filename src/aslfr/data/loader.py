"""What training reads: which samples train and which validate (the seed's split and its length
and score filters, SEED-SPEC 7), the augmented samples as features, their padded batches, each
process's share of every global batch, and the DataLoader that runs them in worker processes.

Every random choice here is seeded per (seed, epoch, sample), so the batches and their
augmentations do not depend on workers or processes.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.utils.data import DataLoader, Dataset

from aslfr.augment import augment
from aslfr.config import Config
from aslfr.data.shards import ShardDataset
from aslfr.features import sample_features
from aslfr.hardware import available_cores
from aslfr.messages import first_line
from aslfr.vocab import MAX_PHRASE


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
        return np.isin(ds.meta[key], participant_folds(groups, cfg.folds, _split_seed(cfg))[cfg.fold])
    else:
        if len(groups) < 2:
            raise ValueError(f"cannot hold out validation data: only {len(groups)} {key} in the data")
        n_val = max(1, int(cfg.val_fraction * len(groups)))
        chosen = groups[:n_val] if cfg.split == "file" else np.random.default_rng(_split_seed(cfg)).permutation(groups)[:n_val]
    return np.isin(ds.meta[key], chosen) & (ds.meta["source"] == "train")


def _split_seed(cfg: "Config") -> int:
    return cfg.seed if cfg.split_seed < 0 else cfg.split_seed


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
        raise ValueError(f"{path}: not a readable scores parquet ({first_line(e)})") from None
    missing = [c for c in ("sequence_id", "score") if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: no {' or '.join(missing)} column (it has {', '.join(table.column_names)}); "
                         f"expected the output of 'aslfr score'")
    for name in ("sequence_id", "score"):
        kind = table.schema.field(name).type
        if not (pa.types.is_integer(kind) or pa.types.is_floating(kind)):
            raise ValueError(f"{path}: column {name} holds {kind}, not numbers; expected the output of 'aslfr score'")
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
    elif cfg.train_filter == "frames":  # the 2nd place's: more than one frame
        keep = ds.meta["n_frames"] > 1
    elif cfg.train_filter == "score":
        if scores_path is None:
            raise ValueError("train_filter=score needs --scores (from 'aslfr score')")
        keep = read_scores(scores_path, ds) > cfg.min_score
    else:
        raise ValueError(f"train_filter {cfg.train_filter!r}: expected 'length', 'score' or 'frames'")
    return {"train": np.flatnonzero(~val & keep), "val": np.flatnonzero(val),
            "val_filtered": np.flatnonzero(val & passes_length_filter(ds)),
            "dropped_by_filter": np.flatnonzero(~val & ~keep)}


class PreparedSamples(Dataset):
    """A prepared directory's samples, opened lazily (each DataLoader worker maps the shards
    itself); items are (epoch, sample index) pairs so that augmentation is seeded by both."""

    root: Path
    _ds: ShardDataset | None = None

    @property
    def ds(self) -> ShardDataset:
        if self._ds is None:
            self._ds = ShardDataset(self.root)
        return self._ds

    def __len__(self) -> int:
        return len(self.ds)


class Samples(PreparedSamples):
    """The seed's samples: its augmentations and features."""

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


def make_loader(samples: Dataset, batches: "EpochBatches", cfg: Config, device: str, world: int = 1,
                log=None, collate_fn=None) -> DataLoader:  # noqa: ANN001
    """The training DataLoader: `batches` of `samples`, augmented and collated in worker
    processes, padded to `max_len` (the seed's shapes) or to the batch's longest sample
    (`collate_fn`: another network family's batches)."""
    workers = loader_workers(cfg.workers, device, world)
    if log and cfg.workers < 0:
        log(f"workers=auto: {workers} loader process{'es' if workers != 1 else ''} on {device} "
            f"({available_cores()} cores available)")
    pad_to = None if cfg.pad_to_batch else cfg.max_len
    return DataLoader(samples, batch_sampler=batches, num_workers=workers,
                      collate_fn=collate_fn or partial(collate, pad_to=pad_to, blank=cfg.charmap.blank),
                      worker_init_fn=_one_thread,
                      prefetch_factor=4 if workers else None, pin_memory=device.startswith("cuda"))
