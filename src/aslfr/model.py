"""The seed's network (SEED-SPEC section 6): a Conv1D + Transformer CTC encoder.

Tensors are channel-last, [batch, time, channels], throughout. BatchNorm is written as an
affine on the last axis (what the ONNX -> TFLite route needs, see EXPORT-NOTES) and synchronises
its batch statistics across DistributedDataParallel processes, so a run's result does not depend
on how many processes share the global batch. Attention reshapes keep the time axis dynamic.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from aslfr.config import Config
from aslfr.features import N_FEATURES
from aslfr.vocab import N_CLASSES

MAX_POSITIONS = 8192


class BatchNorm(nn.Module):
    """BatchNorm over every axis but the last (Keras semantics: momentum 0.95, eps 1e-3,
    biased batch variance in the moving average)."""

    def __init__(self, dim: int, momentum: float = 0.05, eps: float = 1e-3) -> None:
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training:
            flat = x.reshape(-1, x.shape[-1]).float()
            n = torch.tensor(float(flat.shape[0]), device=x.device)
            mean = _global_sum(flat.sum(0)) / _global_sum(n)
            var = _global_sum(((flat - mean) ** 2).sum(0)) / _global_sum(n)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_var.lerp_(var.detach(), self.momentum)
        else:
            mean, var = self.running_mean, self.running_var
        scale = self.weight * torch.rsqrt(var + self.eps)
        return (x * scale + (self.bias - mean * scale)).to(x.dtype)


def dropout(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Inverted dropout. On CPU a uniform draw and a compare: about 1.6x faster than
    `F.dropout`, whose per-element Bernoulli sampler dominated the attention dropout on
    [B, heads, T, T] (benchmarks/README.md); elsewhere `F.dropout` itself."""
    if not training or rate == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, rate, training=True)
    return x * (torch.rand_like(x) >= rate).to(x.dtype) * (1.0 / (1.0 - rate))


def _global_sum(t: torch.Tensor) -> torch.Tensor:
    """Sum over DDP processes, differentiably; the identity in a single process."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        from torch.distributed.nn.functional import all_reduce
        return all_reduce(t)
    return t


class BranchDropout(nn.Module):
    """Drops a whole residual branch per sample (Keras Dropout with noise_shape (B, 1, 1))."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        keep = torch.rand(x.shape[0], 1, 1, device=x.device) >= self.rate
        return x * keep.to(x.dtype) / (1 - self.rate)


class LateDropout(nn.Module):
    """Dropout whose rate applies only from a given optimiser step on; the step is a buffer so
    that it travels with the weights and a resumed run continues it."""

    def __init__(self, rate: float, start_step: int = 0) -> None:
        super().__init__()
        self.rate = rate
        self.start_step = start_step
        self.register_buffer("step", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return x
        active = int(self.step) >= self.start_step
        self.step += 1
        return dropout(x, self.rate, training=active)


class ECA(nn.Module):
    """Efficient channel attention: a 1-D conv over the channels of the time-averaged signal."""

    def __init__(self, kernel_size: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=kernel_size // 2, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if mask is None:  # the seed: padding counts in the average
            mean = x.mean(1, keepdim=True)
        else:
            m = mask[..., None].to(x.dtype)
            mean = (x * m).sum(1, keepdim=True) / m.sum(1, keepdim=True).clamp(min=1)
        # The conv runs over the channels as the width of a [B, 1, 1, C] image: the same weights
        # and sums as the 1-D conv, but onnx2tf then multiplies x in its own [T, C] layout (a 1-D
        # conv made it transpose x to [C, T] and back around the multiply).
        k = self.conv.kernel_size[0]
        w = F.conv2d(mean[:, None], self.conv.weight[:, :, None], padding=(0, k // 2))[:, 0]  # [B, 1, C]
        return x * torch.sigmoid(w)


class Conv1DBlock(nn.Module):
    def __init__(self, dim: int, kernel_size: int, expand: int, drop: float) -> None:
        super().__init__()
        hidden = dim * expand
        self.expand = nn.Linear(dim, hidden)
        self.kernel_size = kernel_size
        self.depthwise = nn.Conv1d(hidden, hidden, kernel_size, groups=hidden, bias=False)
        self.bn = BatchNorm(hidden)
        self.eca = ECA()
        self.project = nn.Linear(hidden, dim)
        self.drop = BranchDropout(drop)

    def causal_conv(self, h: torch.Tensor) -> torch.Tensor:
        """Depthwise conv along time that sees only the current and past frames, run as a 2-D
        conv over [B, C, 1, T] (the same weights and sums). Two things make it export well:
        - rank 4 with groups == channels: onnx2tf makes it TFLite's DEPTHWISE_CONV_2D (a rank-3
          conv becomes a grouped CONV_2D, which only reference kernels run);
        - the time axis is padded in [B, T, C], and the only layout changes are the 4-D
          permutes right around the conv: onnx2tf's own NCHW <-> NHWC transposes then cancel
          them, and the TFLite graph has no transpose here (it had two per block).
        """
        b, _, c = h.shape
        h = F.pad(h, (0, 0, self.kernel_size - 1, 0))[:, None].permute(0, 3, 1, 2)  # [B, C, 1, T+k-1]
        w = self.depthwise.weight[:, :, None]
        return F.conv2d(h, w, groups=w.shape[0]).permute(0, 2, 3, 1).reshape(b, -1, c)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = self.causal_conv(F.silu(self.expand(x)))
        h = self.project(self.eca(self.bn(h), mask))
        return x + self.drop(h)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, rate: float) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim ** -0.5  # the seed scales by the model width, not the head width
        self.qkv = nn.Linear(dim, 3 * dim, bias=False)
        self.out = nn.Linear(dim, dim, bias=False)
        self.dropout_rate = rate

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, self.heads, -1).transpose(1, 2)  # [B, H, T, 3 * C/H]
        q, k, v = qkv.chunk(3, dim=-1)
        scores = (q @ k.transpose(-1, -2)) * self.scale
        if key_mask is not None:  # [B, T], True where a real frame
            scores = scores.masked_fill(~key_mask[:, None, None, :], torch.finfo(scores.dtype).min)
        attn = dropout(torch.softmax(scores, dim=-1), self.dropout_rate, self.training)
        return self.out((attn @ v).transpose(1, 2).reshape(b, t, c))


class TransformerBlock(nn.Module):
    def __init__(self, dim: int, heads: int, expand: int, drop: float, attn_drop: float) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, attn_drop)
        self.drop1 = BranchDropout(drop)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.ffn_in = nn.Linear(dim, dim * expand, bias=False)
        self.ffn_out = nn.Linear(dim * expand, dim, bias=False)
        self.drop2 = BranchDropout(drop)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = x + self.drop1(self.attn(self.norm1(x), key_mask))
        return x + self.drop2(self.ffn_out(F.silu(self.ffn_in(self.norm2(x)))))


def position_table(dim: int, n: int = MAX_POSITIONS) -> torch.Tensor:
    """Fixed sinusoidal encoding: angle pos / 10000^(i / (dim/2)), [sin | cos]. Precomputed in
    float32 so that a float16 export does not round the divisors (EXPORT-NOTES)."""
    half = dim // 2
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    angle = pos / torch.pow(10000.0, torch.arange(half, dtype=torch.float64) / half)[None]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).float()


class FingerspellingModel(nn.Module):
    """[B, T, 600] features -> [B, T, 60] CTC logits (blank 59)."""

    def __init__(self, cfg: Config, steps_per_epoch: int = 1) -> None:
        super().__init__()
        d = cfg.dim
        self.mask_padding = cfg.mask_padding
        self.stem = nn.Linear(N_FEATURES, d, bias=False)
        self.stem_bn = BatchNorm(d)
        self.stages = nn.ModuleList()
        for _ in range(cfg.stages):
            self.stages.append(nn.ModuleList(
                [Conv1DBlock(d, k, cfg.expand, cfg.branch_dropout) for k in cfg.kernel_sizes]
                + [TransformerBlock(d, cfg.heads, cfg.expand, cfg.branch_dropout, cfg.attention_dropout)]))
        self.register_buffer("positions", position_table(d), persistent=False)
        self.head_hidden = nn.Linear(d, d * cfg.expand)
        self.late_dropout = LateDropout(cfg.late_dropout, cfg.late_dropout_start_epoch * steps_per_epoch)
        self.head_out = nn.Linear(d * cfg.expand, N_CLASSES)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        key_mask = None
        if self.mask_padding and lengths is not None:
            key_mask = torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]
        x = self.stem_bn(self.stem(x))
        for s, stage in enumerate(self.stages):
            *convs, transformer = stage
            for conv in convs:
                x = conv(x, key_mask)
            if s == 0:
                x = x + self.positions[: x.shape[1]]
            x = transformer(x, key_mask)
        return self.head_out(self.late_dropout(F.relu(self.head_hidden(x))))


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def flops_per_sequence(cfg: Config, frames: int) -> float:
    """Forward FLOPs (multiply-adds x2) of one sequence of `frames` frames (matmuls and convs; the
    elementwise work is a rounding error next to them)."""
    d, h = cfg.dim, cfg.dim * cfg.expand
    conv = 2 * (d * h + h * d) + 2 * h * sum(cfg.kernel_sizes) / len(cfg.kernel_sizes)
    per_stage_linear = len(cfg.kernel_sizes) * conv + 2 * (3 * d * d + d * d + 2 * d * h)
    attention = 2 * 2 * frames * d  # q k^T and attn v, per frame
    total = 2 * N_FEATURES * d + cfg.stages * (per_stage_linear + attention) + 2 * (d * h + h * N_CLASSES)
    return float(total) * frames


__all__ = ["FingerspellingModel", "count_parameters", "flops_per_sequence", "position_table"]
