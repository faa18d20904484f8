"""What the 2nd place's recipe (SECOND-PLACE-SPEC 1.5, 2, 4, 5) does differently in training
and prediction, for `network=ctc-attention`; the loop itself is `aslfr.train`'s, shared.

- its samples: all 543 landmarks (a directory prepared with `--landmarks all`), augmented
  (`aslfr.augment_all`), preprocessed per sample (`ctc_attention.preprocess`), padded with -100,
  with the decoder input [SOS, c1..cn] (some tokens replaced in training), the attention target
  [c1..cn, EOS] and the CTC target [c1..cn], padded with 0 to 64;
- AdamW (decay 0.01 x lr on every variable), the one-cycle schedule per step (linear warm-up
  from 0, then cosine to min_lr), adversarial weight perturbation from `awp_start_epoch`;
- the loss 0.75 attention (label smoothing 0.25) + 0.25 CTC, each a per-sequence sum averaged
  over sequences; predictions through `aslfr.decoding`.
"""

from __future__ import annotations

import math
from contextlib import nullcontext
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from aslfr.augment_all import augment, replace_tokens
from aslfr.config import Config
from aslfr.ctc_attention import (MAX_TOKENS, PAD_VALUE, CTCAttentionModel, CTCAttentionNet, attention_loss,
                                 ctc_loss, preprocess)
from aslfr.data.loader import PreparedSamples
from aslfr.data.shards import ShardDataset
from aslfr.decoding import decode, specials


def network(cfg: Config) -> CTCAttentionNet:
    """The architecture a config names (vocabulary: pad/blank, the characters, SOS, EOS)."""
    return CTCAttentionNet(vocab=len(cfg.charmap) + 3, dim=cfg.dim, layers=cfg.layers, heads=cfg.heads,
                           kernel_size=cfg.kernel_sizes[0], conv_expand=cfg.expand, ffn_expand=cfg.ffn_expand,
                           block_dropout=cfg.branch_dropout, attention_dropout=cfg.attention_dropout,
                           head_dropout=cfg.head_dropout, decoder_blocks=cfg.decoder_blocks,
                           bn_group=cfg.bn_group)


def build_model(cfg: Config) -> CTCAttentionModel:
    return CTCAttentionModel(network(cfg))


def phrase_ids(phrase: str, cfg: Config) -> np.ndarray:
    """[SOS, c1..cn, EOS] with each character its map index + 1."""
    _, sos, eos = specials(len(cfg.charmap) + 3)
    return np.array([sos, *(np.asarray(cfg.charmap.encode(phrase)) + 1), eos], np.int64)


def check_phrases(ds: ShardDataset, indices: np.ndarray) -> None:
    """Every phrase fits the decoder's 64 positions (with SOS or EOS)."""
    for i in indices:
        if len(ds.phrases[i]) > MAX_TOKENS - 1:
            raise ValueError(f"sequence_id {int(ds.meta['sequence_id'][i])}: its phrase has {len(ds.phrases[i])} "
                             f"characters; this network decodes at most {MAX_TOKENS - 1}")


class JointSamples(PreparedSamples):
    """The 2nd place's samples: every landmark, its augmentations, its per-sample features and
    the three token rows."""

    def __init__(self, root: Path, cfg: Config, train: bool) -> None:
        self.root, self.cfg, self.train = Path(root), cfg, train
        self.charmap = cfg.charmap
        self._ds: ShardDataset | None = None
        self.ds.require_all_landmarks()  # found now, not in a worker

    def __getitem__(self, item: tuple[int, int]) -> dict:
        epoch, i = item
        x = self.ds.landmarks(i)
        ids = phrase_ids(self.ds.phrases[i], self.cfg)
        decoder_in = ids[:-1]
        if self.train and self.cfg.augment:
            rng = np.random.default_rng([self.cfg.seed, epoch, i])
            x = augment(x, rng)
            _, sos, eos = specials(len(self.charmap) + 3)
            decoder_in = replace_tokens(decoder_in, rng, self.cfg.token_replace, len(self.charmap), (0, sos, eos))
        feats = preprocess(torch.from_numpy(np.ascontiguousarray(x, np.float32)), self.cfg.max_len)
        if len(feats) == 0:  # every frame lost (cut out, or none detected): one empty frame
            feats = torch.zeros(1, feats.shape[1])
        return {"features": feats, "decoder_in": torch.from_numpy(decoder_in), "att_target": torch.from_numpy(ids[1:]),
                "ctc_target": torch.from_numpy(ids[1:-1]), "sequence_id": int(self.ds.meta["sequence_id"][i])}


def collate(items: list[dict], pad_to: int | None) -> dict:
    """Features padded with -100 (to `pad_to` or the longest), token rows with 0 to 64."""
    lengths = torch.tensor([len(it["features"]) for it in items])
    t = pad_to or int(lengths.max())
    feats = torch.full((len(items), t, items[0]["features"].shape[1]), PAD_VALUE)
    if torch.utils.data.get_worker_info() is not None:
        feats.share_memory_()
    rows = {k: torch.zeros(len(items), MAX_TOKENS, dtype=torch.long) for k in ("decoder_in", "att_target", "ctc_target")}
    for k, it in enumerate(items):
        feats[k, : len(it["features"])] = it["features"]
        for key, row in rows.items():
            row[k, : len(it[key])] = it[key]
    return {"features": feats, "lengths": lengths, **rows, "sequence_ids": [it["sequence_id"] for it in items]}


def make_optimizer(model: torch.nn.Module, cfg: Config) -> torch.optim.Optimizer:
    """AdamW (betas 0.9, 0.999; epsilon 1e-7), decay weight_decay x lr on every variable."""
    return torch.optim.AdamW(model.parameters(), lr=cfg.lr, betas=(0.9, 0.999), eps=1e-7,
                             weight_decay=cfg.weight_decay)


def learning_rate(step: int, steps_per_epoch: int, cfg: Config) -> float:
    """The one-cycle schedule per optimiser step: lr * step / warm-up steps, then cosine from lr
    to min_lr over the remaining epochs; the step is clamped at the last one."""
    warm, total = cfg.warmup_epochs * steps_per_epoch, cfg.epochs * steps_per_epoch
    step = min(step, total)
    if step < warm:
        return cfg.lr * step / warm
    span = max(1, total - warm)
    return cfg.min_lr + 0.5 * (cfg.lr - cfg.min_lr) * (1 + math.cos(math.pi * (step - warm) / span))


def step_loss(net: torch.nn.Module, batch: dict, cfg: Config, device: str, autocast=nullcontext()) -> torch.Tensor:  # noqa: ANN001, B008
    """(1 - w) attention + w CTC on one batch; the network under `autocast`, the losses in
    float32; CTC's input length is the padded one (what the 2nd place optimised under bf16) or,
    with `ctc_true_lengths`, each sequence's valid encoder steps."""
    lengths = batch["lengths"].to(device)
    with autocast:
        att, ctc = net(batch["features"].to(device), batch["decoder_in"].to(device), lengths)
    la = attention_loss(att, batch["att_target"].to(device), cfg.label_smoothing)
    lc = ctc_loss(ctc, batch["ctc_target"].to(device), (lengths + 1) // 2 if cfg.ctc_true_lengths else None)
    return (1 - cfg.ctc_loss_weight) * la + cfg.ctc_loss_weight * lc


def awp_parameters(model: torch.nn.Module) -> list[torch.nn.Parameter]:
    """The weights AWP perturbs: all but biases, BatchNorm's gamma and beta, and the GRU (the 2nd
    place excludes variables named bias, gamma, beta and rnn)."""
    from aslfr.model import BatchNorm

    skip = {id(p) for m in model.modules() if isinstance(m, BatchNorm) for p in m.parameters()}
    skip |= {id(p) for name, p in model.named_parameters() if name.endswith("bias") or ".gru." in name}
    return [p for p in model.parameters() if id(p) not in skip]


def train_step(net: torch.nn.Module, model: torch.nn.Module, opt: torch.optim.Optimizer, batch: dict,
               cfg: Config, device: str, autocast, awp: bool) -> torch.Tensor:  # noqa: ANN001
    """One optimiser step; with `awp`: the gradient at the weights moved by awp_lr g / |g| (per
    variable) is the one applied, the move undone first (SECOND-PLACE-SPEC 5.4). Returns the loss
    at the unmoved weights."""
    opt.zero_grad()
    loss = step_loss(net, batch, cfg, device, autocast)
    loss.backward()
    if awp:
        moved = []
        with torch.no_grad():
            for p in awp_parameters(model):
                if p.grad is None:
                    continue
                norm = torch.linalg.vector_norm(p.grad)
                delta = cfg.awp_lr * p.grad / norm if norm > 0 else torch.zeros_like(p)
                p.add_(delta)
                moved.append((p, delta))
        opt.zero_grad()
        step_loss(net, batch, cfg, device, autocast).backward()
        with torch.no_grad():
            for p, delta in moved:
                p.sub_(delta)
    opt.step()
    return loss.detach()


def ids_to_text(ids: list[int], cfg: Config) -> str:
    """Decoded ids -> text: the characters only (pad, SOS and EOS dropped)."""
    n = len(cfg.charmap)
    return cfg.charmap.decode([i - 1 for i in ids if 1 <= i <= n])


@torch.no_grad()
def predict(models: list[CTCAttentionModel], samples: JointSamples, indices: np.ndarray, cfg: Config,
            progress: bool = False, bf16: bool = False, quirks: bool = False) -> list[str]:
    """Each sequence of `indices` decoded alone by `cfg.decoding` (with `cfg.ctc_weight`), the
    models averaged per step."""
    out = []
    for i in tqdm(indices, desc="predict", disable=not progress, leave=False):
        feats = samples[(0, int(i))]["features"]
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            ids = decode(models, feats, cfg.decoding, cfg.ctc_weight, quirks=quirks)
        out.append(ids_to_text(ids, cfg))
    return out


__all__ = ["JointSamples", "build_model", "collate", "learning_rate", "make_optimizer", "network", "predict",
           "step_loss", "train_step"]
