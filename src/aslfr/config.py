"""One configuration for the model and its training, and the named presets.

`seed-base` and `seed-final` are the seed's recipe exactly (SEED-SPEC sections 6 and 8);
options that improve on the seed exist but are off there. `second-place` is the 2nd place's
(SECOND-PLACE-SPEC 1-5): `network=ctc-attention`, which reads the settings of its own section
below and these shared ones as its own: dim, heads, expand (the Conv1D blocks'), kernel_sizes
(its one depthwise kernel), branch_dropout (its per-sample block dropout), attention_dropout,
bn_group, max_len, batch_size, epochs, lr (the peak), warmup_epochs, ctc_true_lengths.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aslfr.vocab import CharacterMap


@dataclass
class Config:
    # --- network (SEED-SPEC 6) ---
    stages: int = 3
    dim: int = 384
    expand: int = 2
    kernel_sizes: tuple[int, ...] = (11, 7, 3)
    heads: int = 6
    branch_dropout: float = 0.2       # drops a whole residual branch per sample
    attention_dropout: float = 0.2
    late_dropout: float = 0.4
    late_dropout_start_epoch: int = 0
    content_mask: bool = True         # the seed's Masking(0.0): all-zero frames (padding, nothing
                                      # detected) stay out of the stem's and stage 1's BN and ECA
    bn_group: int = 16                # BatchNorm statistics per group of this many samples (the
                                      # seed's per-TPU-core batch); 0: the whole global batch
    # --- data ---
    characters: tuple[str, ...] = ()  # the output alphabet in index order; () = the competition's 59
    max_len: int = 380
    augment: bool = True
    split: str = "file"               # "file" (the seed's) or "participant" (stricter)
    val_fraction: float = 0.05        # share of files (or participants) held out
    folds: int = 0                    # > 1: participant folds; `fold` is the one held out
    fold: int = 0
    train_filter: str = "length"      # "length" (SEED-SPEC 7.1), "score" (7.3) or "frames" (more than
                                      # one frame, SECOND-PLACE-SPEC 1.5)
    min_score: float = 0.2
    # --- recipe (SEED-SPEC 8) ---
    batch_size: int = 128             # global, over all processes
    epochs: int = 300
    lr: float = 1e-3
    warmup_epochs: int = 5
    radam_threshold: float = 4.0
    lookahead_steps: int = 5
    lookahead_alpha: float = 0.5
    seed: int = 42
    split_seed: int = -1              # the participant split's and folds' seed; -1: `seed` (runs of
                                      # an ensemble share a split by giving one split_seed)
    eval_every: int = 50              # epochs between validation runs
    checkpoint_every: int = 50        # epochs between checkpoints
    # --- the network family: "seed" (SEED-SPEC 6) or "ctc-attention" (SECOND-PLACE-SPEC 3) ---
    network: str = "seed"
    # --- ctc-attention only (SECOND-PLACE-SPEC 2-6) ---
    layers: str = "CCCTCCCTDCCCTCCCT"  # C: Conv1D block, T: Transformer block, D: the stride-2 block
    ffn_expand: int = 2               # the Transformer blocks' feed-forward expansion
    head_dropout: float = 0.5         # CTC head and decoder classifier
    decoder_blocks: int = 1
    ctc_loss_weight: float = 0.25     # loss = (1 - w) attention + w CTC
    label_smoothing: float = 0.25
    weight_decay: float = 0.01        # AdamW's decoupled decay (x lr), on every variable
    min_lr: float = 1e-6              # the cosine's floor
    awp_lr: float = 0.2               # adversarial weight perturbation: delta = awp_lr g / |g|
    awp_start_epoch: int = 40         # AWP from this epoch on; -1: never
    token_replace: float = 0.2        # share of decoder-input tokens replaced by random ids
    decoding: str = "joint"           # how validation and scoring decode: ctc, attention or joint
    ctc_weight: float = 0.2           # the joint decoder's CTC weight
    # --- beyond the seed: all off in the seed presets ---
    mask_padding: bool = False        # padded frames out of every BN, ECA and attention key
    ctc_true_lengths: bool = False    # CTC input length = real frames, not the padded length
    pad_to_batch: bool = False        # pad a batch to its longest sample instead of max_len
    # --- speed ---
    workers: int = -1                 # DataLoader workers (augmentation runs there); -1 (auto):
                                      # 1 on a CPU, every core but one on a GPU (data.loader.loader_workers)
    bf16: str = "false"               # bf16 autocast: "true", "false", or "auto" (where the hardware
                                      # has native bf16: a GPU that supports it, a CPU with
                                      # AVX512_BF16 or AMX); float32 weights and loss either way
    compile: bool = False             # torch.compile

    def override(self, assignments: list[str]) -> "Config":
        """Apply `key=value` strings; an unknown key is an error naming the valid ones."""
        fields = {f.name: f for f in dataclasses.fields(self)}
        changes = {}
        for item in assignments:
            key, sep, raw = item.partition("=")
            key = key.strip().replace("-", "_")
            if not sep:
                raise ValueError(f"--set {item!r}: expected key=value")
            if key not in fields:
                raise ValueError(f"--set {key}: unknown setting; valid settings: {', '.join(sorted(fields))}")
            changes[key] = _parse(raw, getattr(self, key), key)
        return dataclasses.replace(self, **changes)

    def check(self, world: int = 1) -> "Config":
        """Settings that cannot train or run, as one message naming the setting; `world`: the
        number of processes that share each global batch."""
        for f in dataclasses.fields(self):  # every number finite, whatever its range
            value = getattr(self, f.name)
            if isinstance(value, float) and not math.isfinite(value):
                raise ValueError(f"--set {f.name}={value}: expected a finite number")
        ranges = {"seed": (0, 2**63 - 1, "a whole number >= 0"), "split_seed": (-1, 2**63 - 1, "-1 or a whole number >= 0"),
                  "val_fraction": (0.0, 1.0, "a share in (0, 1)"),
                  "min_score": (-math.inf, 1.0, "a score <= 1"), "radam_threshold": (0.0, math.inf, "a number >= 0"),
                  "late_dropout_start_epoch": (0, math.inf, "an epoch >= 0"), "folds": (0, math.inf, "0, 1 or more"),
                  "fold": (0, math.inf, "a fold >= 0")}
        for key, (low, high, words) in ranges.items():
            value = getattr(self, key)
            if not low <= value <= high or (key == "val_fraction" and value in (0.0, 1.0)):
                raise ValueError(f"--set {key}={value}: expected {words}")
        positive = ("stages", "dim", "expand", "heads", "max_len", "batch_size", "epochs", "eval_every",
                    "checkpoint_every", "lookahead_steps")
        for key in positive:
            if getattr(self, key) < 1:
                raise ValueError(f"--set {key}={getattr(self, key)}: must be at least 1")
        if not self.kernel_sizes or min(self.kernel_sizes) < 1:
            raise ValueError(f"--set kernel_sizes={','.join(map(str, self.kernel_sizes))}: need one or more sizes >= 1")
        if self.dim % self.heads:
            raise ValueError(f"--set heads={self.heads}: the width dim={self.dim} must split evenly over the heads")
        if self.dim % 2:
            raise ValueError(f"--set dim={self.dim}: the position encoding needs an even width")
        for key in ("branch_dropout", "attention_dropout", "late_dropout"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"--set {key}={getattr(self, key)}: expected a rate in [0, 1)")
        if self.lr <= 0 or not 0 < self.lookahead_alpha <= 1 or self.warmup_epochs < 0 or self.workers < -1:
            raise ValueError("--set lr, lookahead_alpha, warmup_epochs, workers: expected lr > 0, "
                             "0 < lookahead_alpha <= 1, warmup_epochs >= 0, workers >= 0 or auto")
        if self.bf16 not in ("true", "false", "auto"):
            raise ValueError(f"--set bf16={self.bf16}: expected true, false or auto")
        if self.network not in NETWORKS:
            raise ValueError(f"--set network={self.network}: expected one of {', '.join(NETWORKS)}")
        if self.network == "ctc-attention":
            self._check_ctc_attention()
        if self.bn_group < 0:
            raise ValueError(f"--set bn_group={self.bn_group}: expected 0 (whole batch) or a group size")
        if self.batch_size % world:
            raise ValueError(f"--set batch_size={self.batch_size}: does not split over {world} processes")
        if self.bn_group and (self.batch_size // world) % self.bn_group:
            raise ValueError(f"--set bn_group={self.bn_group}: each process's share of the batch "
                             f"({self.batch_size} / {world} processes = {self.batch_size // world}) is not a whole "
                             f"number of BatchNorm groups; choose a batch_size or bn_group that divides it")
        return self

    def _check_ctc_attention(self) -> None:
        if not self.layers or set(self.layers) - set("CTD"):
            raise ValueError(f"--set layers={self.layers}: expected a string of C (conv), T (transformer) and "
                             f"D (the stride-2 conv)")
        if len(self.kernel_sizes) != 1:
            raise ValueError(f"--set kernel_sizes={','.join(map(str, self.kernel_sizes))}: this network has one "
                             f"depthwise kernel size")
        for key in ("ffn_expand", "decoder_blocks"):
            if getattr(self, key) < 1:
                raise ValueError(f"--set {key}={getattr(self, key)}: must be at least 1")
        for key in ("head_dropout", "token_replace"):
            if not 0 <= getattr(self, key) < 1:
                raise ValueError(f"--set {key}={getattr(self, key)}: expected a rate in [0, 1)")
        for key in ("ctc_loss_weight", "label_smoothing", "ctc_weight"):
            if not 0 <= getattr(self, key) <= 1:
                raise ValueError(f"--set {key}={getattr(self, key)}: expected a weight in [0, 1]")
        if self.weight_decay < 0 or self.min_lr < 0 or self.min_lr > self.lr or self.awp_lr < 0:
            raise ValueError("--set weight_decay, min_lr, awp_lr: expected weight_decay >= 0, 0 <= min_lr <= lr, "
                             "awp_lr >= 0")
        if self.awp_start_epoch < -1:
            raise ValueError(f"--set awp_start_epoch={self.awp_start_epoch}: expected an epoch, or -1 for never")
        if self.decoding not in ("ctc", "attention", "joint"):
            raise ValueError(f"--set decoding={self.decoding}: expected ctc, attention or joint")

    @property
    def charmap(self) -> "CharacterMap":
        from aslfr.vocab import COMPETITION, CharacterMap

        return CharacterMap(self.characters, "the model's character map") if self.characters else COMPETITION

    def with_charmap(self, charmap: "CharacterMap") -> "Config":
        """The same settings with `charmap` as the output alphabet (the competition's map is stored as ())."""
        return dataclasses.replace(self, characters=() if charmap.is_competition else tuple(charmap.tokens))

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Config":
        d = dict(d)
        for key in ("kernel_sizes", "characters"):
            if key in d:
                d[key] = tuple(d[key])
        # checkpoints written before these settings existed computed the network without them
        d.setdefault("content_mask", False)
        if isinstance(d.get("bf16"), bool):  # checkpoints from when it was on or off
            d["bf16"] = "true" if d["bf16"] else "false"
        d.setdefault("bn_group", 0)
        unknown = set(d) - {f.name for f in dataclasses.fields(cls)}
        if unknown:
            raise ValueError(f"unknown settings {sorted(unknown)}")
        return cls(**d)


def _parse(raw: str, current: object, key: str) -> object:
    try:
        if key == "bf16" and raw.lower() in ("1", "true", "yes", "on", "0", "false", "no", "off", "auto"):
            return {"1": "true", "yes": "true", "on": "true", "0": "false", "no": "false", "off": "false"}.get(
                raw.lower(), raw.lower())
        if key == "workers" and raw.lower() == "auto":
            return -1
        if isinstance(current, bool):
            if raw.lower() in ("1", "true", "yes", "on"):
                return True
            if raw.lower() in ("0", "false", "no", "off"):
                return False
            raise ValueError
        if isinstance(current, int):
            return int(raw)
        if isinstance(current, float):
            return float(raw)
        if key == "characters":
            raise ValueError
        if isinstance(current, tuple):
            return tuple(int(x) for x in raw.split(","))
        return raw
    except ValueError:
        if key == "characters":
            raise ValueError("--set characters: give a character map file with --characters map.json") from None
        raise ValueError(f"--set {key}={raw}: expected a value like {json.dumps(current)}") from None


#: the network families a config can name
NETWORKS = ("seed", "ctc-attention")

PRESETS: dict[str, Config] = {
    "seed-base": Config(),
    "seed-final": Config(stages=5, max_len=340, batch_size=256, epochs=1500, late_dropout=0.8,
                         late_dropout_start_epoch=15, train_filter="score", bn_group=32),
    # Small enough to learn the synthetic data on a 2-core CPU within 10 minutes (measured in
    # README): 64 frames, batch 16, lighter dropout, a higher learning rate and no Lookahead
    # (alpha 1: the slow weights follow the fast ones), which reach a given score in about half
    # the epochs on this data.
    "demo": Config(stages=2, dim=128, heads=4, max_len=64, batch_size=16, epochs=40, lr=5e-3, bf16="auto",
                   lookahead_alpha=1.0, warmup_epochs=2, branch_dropout=0.1, attention_dropout=0.1,
                   late_dropout=0.1, split="participant", val_fraction=0.2, eval_every=4,
                   checkpoint_every=4, mask_padding=True, ctc_true_lengths=True, pad_to_batch=True,
                   bn_group=0),
}
# The pipeline's pair for the demo (`aslfr pipeline --preset demo`): shorter, so that the whole
# pipeline fits in 15 minutes on 2 cores; the final model is larger, as in the seed.
PRESETS["demo-base"] = dataclasses.replace(PRESETS["demo"], epochs=16)
PRESETS["demo-final"] = dataclasses.replace(PRESETS["demo"], stages=3, epochs=16, train_filter="score")
# The 2nd place's recipe (SECOND-PLACE-SPEC 1-5): 6,366,525 parameters, all 543 landmarks (prepare
# --landmarks all), the first 768 frames padded with -100, batch 128 in BatchNorm groups of 16,
# AdamW at 4e-3 with decay 0.01 x lr on every variable, 40 warm-up epochs then cosine to 1e-6 over
# 400, AWP from epoch 40, bf16 as it trained, CTC on the padded lengths as its bf16 loss saw them
# (ctc_true_lengths=true is the valid lengths). Its validation was fold 0 of 5 (how the folds
# were formed is not stated): here a fifth of the files.
PRESETS["second-place"] = Config(
    network="ctc-attention", dim=192, heads=4, expand=4, kernel_sizes=(17,), branch_dropout=0.2,
    attention_dropout=0.2, bn_group=16, max_len=768, batch_size=128, epochs=400, lr=4e-3, warmup_epochs=40,
    bf16="true", train_filter="frames", val_fraction=0.2, eval_every=10, checkpoint_every=10,
    mask_padding=True, late_dropout=0.0, lookahead_alpha=1.0)
# A member of the same design small enough to train on 2 CPU cores: 96 wide, 5 layers (conv,
# transformer, the stride-2 conv, conv, transformer), conv expansion 2, kernel 9, the first 320
# frames (every synthetic sequence whole), batch 16, 20 epochs, AWP from epoch 15. Its recipe is
# lighter, as the `demo` preset's is: the losses weighted 0.5 / 0.5, no augmentation, dropout
# only before the heads (0.1), a peak rate of 5e-3; at the 2nd place's 0.25 CTC weight with its
# augmentations it had not left the CTC blank plateau after 12 epochs (README).
PRESETS["second-place-demo"] = dataclasses.replace(
    PRESETS["second-place"], dim=96, heads=4, expand=2, layers="CTDCT", kernel_sizes=(9,), max_len=320,
    batch_size=16, epochs=20, lr=5e-3, warmup_epochs=3, awp_start_epoch=15, bn_group=0, bf16="auto",
    split="participant", branch_dropout=0.0, attention_dropout=0.0, head_dropout=0.1, ctc_loss_weight=0.5,
    augment=False, eval_every=4, checkpoint_every=4, pad_to_batch=True, ctc_true_lengths=True)


def preset(name: str) -> Config:
    try:
        return dataclasses.replace(PRESETS[name])
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; presets: {', '.join(PRESETS)}") from None


__all__ = ["Config", "PRESETS", "preset"]
