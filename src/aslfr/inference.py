"""The on-device model: raw columns in, decoded characters out, in one exportable module.

    inputs [T, 200] float32 (NaN = not detected; T may be 0)
      -> SEED-SPEC 4 preprocessing (`features.sample_features`, the training code itself)
      -> the network -> greedy CTC decoding
      -> outputs [L, classes]: row i's argmax is the i-th decoded character; the rows after the
         last character (and the only row, for an empty string) are blank (the last class:
         index 59 of 60 for the competition's map).

Everything is tensor code with no Python branch on the data, so `torch.onnx.export` keeps T
dynamic and the graph converts to builtin TFLite ops (EXPORT-NOTES).
"""

from __future__ import annotations

import torch
from torch import nn

from aslfr.config import Config
from aslfr.features import rows_to_coords, sample_features
from aslfr.landmarks import SELECTED_COLUMNS

N_COLUMNS = len(SELECTED_COLUMNS)


def greedy_rows(logits: torch.Tensor, blank: int = 59) -> torch.Tensor:
    """[T, C] logits -> [T, C] one-hot rows: the greedy CTC string first (repeats merged, blanks
    dropped), then blank rows. `blank`: the last class (59 for the competition's map)."""
    best = logits.argmax(-1)                                               # [T]
    t = torch.arange(best.shape[0], device=logits.device)
    prev = best.index_select(0, torch.clamp(t - 1, min=0))
    keep = (best != blank) & ((t == 0) | (best != prev))
    return compact_rows(best, keep, logits.shape[-1], logits.dtype)


def compact_rows(values: torch.Tensor, keep: torch.Tensor, classes: int,
                 dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Class indices [N] and which of them to keep [N] -> [N, classes] one-hot rows: the kept
    ones first, in order, then blank rows (the last class). Compaction is an [N, N] selection
    matmul, not a data-dependent shape, so it exports as plain ops."""
    keep_f = keep.to(dtype)
    slot = torch.cumsum(keep_f, 0) - 1                                     # output row of each kept value
    rows = torch.arange(values.shape[0], device=values.device).to(dtype)
    select = (rows[:, None] == slot[None, :]).to(dtype) * keep_f[None, :]  # [rows, values]
    ids = torch.arange(classes, device=values.device)
    onehot = (values[:, None] == ids[None, :]).to(dtype)                   # [values, C]
    chars = select @ onehot                                                # [rows, C]
    filled = select.sum(1, keepdim=True)                                   # 1 where a value landed
    return chars + (1 - filled) * (ids == classes - 1).to(dtype)[None, :]


class InferenceModule(nn.Module):
    def __init__(self, model: nn.Module, mean: torch.Tensor, std: torch.Tensor, max_frames: int,
                 decode: bool = True) -> None:
        super().__init__()
        self.blank = model.head_out.out_features - 1
        self.model = model.eval()
        self.register_buffer("mean", torch.as_tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.as_tensor(std, dtype=torch.float32))
        self.max_frames = max_frames
        self.decode = decode
        # frames never exceed max_frames here: keep only that much of the position table
        self.model.positions = self.model.positions[:max_frames].clone()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        # T = 0 becomes one all-NaN frame. Written from the data (a NaN row appended, a length
        # taken from a tensor sum), as shape arithmetic would be simplified away by export.
        x = torch.cat([inputs, inputs.new_full((1, N_COLUMNS), float("nan"))], 0)
        n = int(torch.clamp(torch.ones_like(x[:, 0]).sum() - 1, min=1).to(torch.int64).item())
        torch._check(n >= 1)
        torch._check(n <= x.shape[0])
        x = x.narrow(0, 0, n)
        feats = sample_features(rows_to_coords(x), self.mean, self.std, self.max_frames)
        logits = self.model(feats[None])[0]
        return greedy_rows(logits, self.blank) if self.decode else logits


def build(checkpoint, stats_path=None, max_frames: int | None = None, decode: bool = True,
          device: str = "cpu") -> tuple[InferenceModule, Config]:
    """The inference module of a training checkpoint; the normalisation statistics travel in the
    checkpoint, or (for an older checkpoint) come from `stats_path`."""
    import numpy as np

    from aslfr.checkpoints import load_model

    model, cfg, stats = load_model(checkpoint, device)
    if cfg.network != "seed":
        raise ValueError(f"{checkpoint}: holds the 2nd place's network ({cfg.network}); its on-device model is "
                         f"aslfr.joint_inference.build (aslfr export picks it)")
    if stats is not None:
        mean, std = stats
    elif stats_path is not None:
        with np.load(stats_path) as d:
            mean, std = d["mean"], d["std"]
    else:
        raise ValueError(f"{checkpoint}: holds no normalisation statistics; pass the prepared data's stats.npz")
    # the network saw at most cfg.max_len frames in training; export may only lower that
    frames = min(max_frames, cfg.max_len) if max_frames else cfg.max_len
    return InferenceModule(model, torch.as_tensor(mean), torch.as_tensor(std), frames, decode), cfg
