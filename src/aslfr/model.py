"""The seed's network (SEED-SPEC section 6): a Conv1D + Transformer CTC encoder.

Tensors are channel-last, [batch, time, channels], throughout. BatchNorm is written as an
affine on the last axis (what the ONNX -> TFLite route needs, see EXPORT-NOTES); its training
statistics come from groups of the seed's per-core batch, or from the whole global batch
synchronised across DistributedDataParallel processes, so a run's result does not depend on how
many processes share the global batch. Attention reshapes keep the time axis dynamic.
Every fully connected layer is `aslfr.kernels.Linear`: `nn.Linear`'s parameters, computed in
float32 by the matmul kernel measured fastest on the machine (MKL or oneDNN).

Where networks and decoders live: one module per network family, each holding its encoder and
whatever heads and decoder that family trains (this one: the seed's encoder and CTC head), so
that a preset's whole network, its parameter count and its Keras import read in one file; the 2nd
place's encoder, GRU CTC head and attention decoder are one family of their own, in a module of
their own. The shared blocks (BatchNorm with its groups and masks, ECA, dropout) stay here and
are imported, not copied. Decoding algorithms (CTC greedy, attention greedy, joint CTC/attention)
are not part of a network: each is one implementation in one decoding module, used by scoring,
the exported on-device model, the Recognizer and `live` alike.
"""

from __future__ import annotations

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from aslfr import dropout as fused_dropout
from aslfr.config import Config
from aslfr.features import N_FEATURES
from aslfr.kernels import Linear

MAX_POSITIONS = 8192


class BatchNorm(nn.Module):
    """BatchNorm over every axis but the last, as Keras computes it: momentum 0.95 (0.05 here),
    epsilon 1e-3, the biased batch variance in the moving average.

    In training the statistics come from
    - `group` = 0: the whole global batch, summed over DistributedDataParallel processes, so a
      run does not depend on how many processes share the batch;
    - `group` = g > 0: each block of g consecutive samples on its own, as each core of the
      seed's TPU normalised its share of the batch (Keras' default `synchronized=False`).
      The moving averages take the mean over all groups (of all processes) of each group's
      statistics, which is what averaging 8 replicas' updates gives.
    `mask` ([B, T], True where a frame counts) leaves frames out of the statistics (Keras'
    `weighted_moments` with the propagated mask); every frame is still normalised.
    """

    def __init__(self, dim: int, momentum: float = 0.05, eps: float = 1e-3, group: int = 0) -> None:
        super().__init__()
        self.momentum, self.eps, self.group = momentum, eps, group
        self.weight = nn.Parameter(torch.ones(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("running_mean", torch.zeros(dim))
        self.register_buffer("running_var", torch.ones(dim))

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if not self.training:
            scale = self.weight * torch.rsqrt(self.running_var + self.eps)
            return (x * scale + (self.bias - self.running_mean * scale)).to(x.dtype)
        b, c = x.shape[0], x.shape[-1]
        if self.group and b % self.group:
            raise ValueError(f"a batch of {b} samples does not split into BatchNorm groups of {self.group} "
                             f"(setting bn_group)")
        groups = b // self.group if self.group else 1
        synced = not self.group  # one group spanning every process's share
        if mask is None and not (synced and _world() > 1):
            return self._fused(x.reshape(groups, -1, c), x)
        flat = x.float().reshape(groups, -1, c)                               # [G, N, C]
        if mask is None:
            n = torch.full((groups, 1), float(flat.shape[1]), device=x.device)
            mean = _sum_if(synced, flat.sum(1)) / _sum_if(synced, n)
            var = _sum_if(synced, ((flat - mean[:, None]) ** 2).sum(1)) / _sum_if(synced, n)
        else:
            w = mask.reshape(groups, -1, 1).to(flat.dtype)                    # [G, N, 1]
            n = _sum_if(synced, w.sum(1)).clamp(min=1.0)
            mean = _sum_if(synced, (flat * w).sum(1)) / n
            var = _sum_if(synced, (((flat - mean[:, None]) ** 2) * w).sum(1)) / n
        with torch.no_grad():
            avg_mean, avg_var = mean.detach().mean(0), var.detach().mean(0)
            if not synced and _world() > 1:  # the mean over every process's groups
                both = _all_mean(torch.stack([avg_mean, avg_var]))
                avg_mean, avg_var = both[0], both[1]
            self.running_mean.lerp_(avg_mean, self.momentum)
            self.running_var.lerp_(avg_var, self.momentum)
        scale = self.weight * torch.rsqrt(var + self.eps)                     # [G, C]
        out = flat * scale[:, None] + (self.bias - mean * scale)[:, None]
        return out.reshape(x.shape).to(x.dtype)

    def _fused(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """Every frame counts, one process's groups: PyTorch's own batch norm on each group's
        [N, C] (statistics and normalisation in two passes, and a fused backward), the same
        function as the masked path's ops up to float32 rounding at a third of their passes.
        A bf16 input (autocast) goes in as it is: the statistics are accumulated in float32 and
        only the output is bf16, without the two float32 copies of the activations."""
        outs, means, variances = [], [], []
        for part in flat.unbind(0):
            out, mean, invstd = torch.native_batch_norm(part, self.weight, self.bias, None, None, True, 0.0, self.eps)
            outs.append(out)
            with torch.no_grad():  # the biased variance, for the moving average
                means.append(mean)
                variances.append(invstd.double().pow(-2).sub(self.eps).float())
        with torch.no_grad():
            avg_mean, avg_var = torch.stack(means).mean(0), torch.stack(variances).mean(0)
            if _world() > 1:  # the mean over every process's groups
                both = _all_mean(torch.stack([avg_mean, avg_var]))
                avg_mean, avg_var = both[0], both[1]
            self.running_mean.lerp_(avg_mean, self.momentum)
            self.running_var.lerp_(avg_var, self.momentum)
        out = outs[0][None] if len(outs) == 1 else torch.stack(outs)
        return out.reshape(x.shape).to(x.dtype)


def dropout(x: torch.Tensor, rate: float, training: bool) -> torch.Tensor:
    """Inverted dropout. On CPU a uniform draw and a compare: about 1.6x faster than
    `F.dropout`, whose per-element Bernoulli sampler dominated the attention dropout on
    [B, heads, T, T] (benchmarks/README.md); elsewhere `F.dropout` itself."""
    if not training or rate == 0:
        return x
    if x.device.type != "cpu":
        return F.dropout(x, rate, training=True)
    if fused_dropout.fits(x):  # one pass forward, one backward, no mask kept (aslfr/dropout.py)
        return fused_dropout.dropout(x, rate)
    # the draw becomes the scaled mask in place (0 or 1 / (1 - rate)): one multiply of x forward
    # and one of its gradient backward, the same bits as x * mask * scale
    return x * torch.rand_like(x).ge_(rate).mul_(1.0 / (1.0 - rate))


def _world() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def _sum_if(synced: bool, t: torch.Tensor) -> torch.Tensor:
    """Sum over DDP processes, differentiably, where the statistics are synchronised; the
    identity otherwise and in a single process."""
    if synced and _world() > 1:
        from torch.distributed.nn.functional import all_reduce
        return all_reduce(t)
    return t


def _all_mean(t: torch.Tensor) -> torch.Tensor:
    t = t.clone()
    dist.all_reduce(t)
    return t / _world()


class BranchDropout(nn.Module):
    """Drops a whole residual branch per sample (Keras Dropout with noise_shape (B, 1, 1))."""

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0:
            return x
        return x * self._keep(x)

    def _keep(self, x: torch.Tensor) -> torch.Tensor:
        keep = torch.rand(x.shape[0], 1, 1, device=x.device) >= self.rate
        return keep.to(x.dtype) * (1.0 / (1 - self.rate))  # [B, 1, 1]: 0 or 1 / (1 - rate)

    def residual(self, x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """`x + self(h)` in one pass over the activations (addcmul)."""
        if not self.training or self.rate == 0:
            return x + h
        return torch.addcmul(x, h, self._keep(h))


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
        if mask is None:  # every frame counts, padding included (the seed after stage 1)
            mean = x.mean(1, keepdim=True)
        else:  # Keras GlobalAveragePooling1D with a mask; a sequence with no frame left gives 0
            # the mean over time of x weighted by mask * T / count: the masked mean, written as the
            # unmasked one (a ReduceMean), with the division on the [B, T] mask; a sum over time,
            # or a division of the [B, 1, C] mean, made onnx2tf swap T and C in the exported graph
            m = mask.to(x.dtype)
            w = m * (m.shape[1] / m.sum(1, keepdim=True).clamp(min=1))
            mean = (x * w[..., None]).mean(1, keepdim=True)
        # The conv runs over the channels as the width of a [B, 1, 1, C] image: the same weights
        # and sums as the 1-D conv, but onnx2tf then multiplies x in its own [T, C] layout (a 1-D
        # conv made it transpose x to [C, T] and back around the multiply).
        if self.band is not None:  # the same conv as a product with its [C, C] band matrix; one
            # sequence, its gate a [C] vector (a [1, 1, C] one onnx2tf transposed against x)
            return x * torch.sigmoid(mean.reshape(-1) @ self.band.to(mean.dtype))
        k = self.conv.kernel_size[0]
        w = F.conv2d(mean[:, None], self.conv.weight[:, :, None], padding=(0, k // 2))[:, 0]  # [B, 1, C]
        return x * torch.sigmoid(w)

    #: set by `use_band` (the 2nd place's on-device model, batch 1): onnx2tf converts the
    #: channel conv there with its layout swapped and transposes x after it; a MatMul it takes
    band: torch.Tensor | None = None

    def use_band(self, channels: int) -> None:
        """Run the channel conv as mean @ B, B[i + o, i] = w[o + k // 2] (zero padding)."""
        w = self.conv.weight.detach()[0, 0]
        k = w.shape[0]
        band = torch.zeros(channels, channels, dtype=w.dtype)
        for j in range(k):
            o = j - k // 2
            if abs(o) < channels:
                band += w[j] * torch.diag(torch.ones(channels - abs(o), dtype=w.dtype), -o)
        self.band = band


class Conv1DBlock(nn.Module):
    def __init__(self, dim: int, kernel_size: int, expand: int, drop: float, bn_group: int = 0) -> None:
        super().__init__()
        hidden = dim * expand
        self.expand = Linear(dim, hidden)
        self.kernel_size = kernel_size
        self.depthwise = nn.Conv1d(hidden, hidden, kernel_size, groups=hidden, bias=False)
        self.bn = BatchNorm(hidden, group=bn_group)
        self.eca = ECA()
        self.project = Linear(hidden, dim)
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
        """`mask` [B, T]: the frames that count in the BatchNorm statistics and the ECA mean."""
        h = self.causal_conv(F.silu(self.expand(x)))
        h = self.project(self.eca(self.bn(h, mask), mask))
        return self.drop.residual(x, h)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, rate: float) -> None:
        super().__init__()
        self.heads = heads
        self.scale = dim ** -0.5  # the seed scales by the model width, not the head width
        self.qkv = Linear(dim, 3 * dim, bias=False)
        self.out = Linear(dim, dim, bias=False)
        self.dropout_rate = rate

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        b, t, c = x.shape
        qkv = self.qkv(x).reshape(b, t, self.heads, -1).transpose(1, 2)  # [B, H, T, 3 * C/H]
        q, k, v = qkv.chunk(3, dim=-1)
        # the scale on q ([B, H, T, C/H]) rather than on the scores ([B, H, T, T]): the same
        # product up to float32 rounding, at a sixth of the elementwise work forward and backward
        scores = (q * self.scale) @ k.transpose(-1, -2)
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
        self.ffn_in = Linear(dim, dim * expand, bias=False)
        self.ffn_out = Linear(dim * expand, dim, bias=False)
        self.drop2 = BranchDropout(drop)

    def forward(self, x: torch.Tensor, key_mask: torch.Tensor | None = None) -> torch.Tensor:
        x = self.drop1.residual(x, self.attn(self.norm1(x), key_mask))
        return self.drop2.residual(x, self.ffn_out(F.silu(self.ffn_in(self.norm2(x)))))


def position_table(dim: int, n: int = MAX_POSITIONS) -> torch.Tensor:
    """Fixed sinusoidal encoding: angle pos / 10000^(i / (dim/2)), [sin | cos]. Precomputed in
    float32 so that a float16 export does not round the divisors (EXPORT-NOTES)."""
    half = dim // 2
    pos = torch.arange(n, dtype=torch.float64)[:, None]
    angle = pos / torch.pow(10000.0, torch.arange(half, dtype=torch.float64) / half)[None]
    return torch.cat([torch.sin(angle), torch.cos(angle)], dim=-1).float()


class FingerspellingModel(nn.Module):
    """[B, T, 600] features -> [B, T, classes] CTC logits (60, blank 59, for the competition's map).

    Which frames count where (SEED-SPEC 6, pinned to Keras by tests/test_seed_network.py):
    - `content_mask` (the seed): a frame whose 600 features are all 0 (padding, or a frame with
      nothing detected) is left out of the stem's and the first stage's BatchNorm statistics and
      ECA means, as the seed's `Masking(0.0)` mask reaches them; it is lost at the position
      encoding, so later stages and all attention see every frame;
    - `mask_padding` (beyond the seed, needs `lengths`): frames past each sample's length are
      left out of every BatchNorm's statistics and ECA mean and masked as attention keys, so a
      sample's output does not depend on its padding.
    """

    def __init__(self, cfg: Config, steps_per_epoch: int = 1) -> None:
        super().__init__()
        d = cfg.dim
        self.mask_padding = cfg.mask_padding
        self.content_mask = cfg.content_mask
        self.stem = Linear(N_FEATURES, d, bias=False)
        self.stem_bn = BatchNorm(d, group=cfg.bn_group)
        self.stages = nn.ModuleList()
        for _ in range(cfg.stages):
            self.stages.append(nn.ModuleList(
                [Conv1DBlock(d, k, cfg.expand, cfg.branch_dropout, cfg.bn_group) for k in cfg.kernel_sizes]
                + [TransformerBlock(d, cfg.heads, cfg.expand, cfg.branch_dropout, cfg.attention_dropout)]))
        self.register_buffer("positions", position_table(d), persistent=False)
        self.head_hidden = Linear(d, d * cfg.expand)
        self.late_dropout = LateDropout(cfg.late_dropout, cfg.late_dropout_start_epoch * steps_per_epoch)
        self.head_out = Linear(d * cfg.expand, cfg.charmap.n_classes)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        padding = None  # [B, T], True for a real frame
        if self.mask_padding and lengths is not None:
            padding = torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]
        first = padding
        if self.content_mask:  # Keras Masking(0.0): any feature not 0 (a max, which exports cleanly)
            first = torch.abs(x).amax(-1) > 0
            if padding is not None:
                first = first & padding
        x = self.stem_bn(self.stem(x), first)
        for s, stage in enumerate(self.stages):
            *convs, transformer = stage
            for conv in convs:
                x = conv(x, first if s == 0 else padding)
            if s == 0:
                x = x + self.positions[: x.shape[1]]
            x = transformer(x, padding)
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
    total = 2 * N_FEATURES * d + cfg.stages * (per_stage_linear + attention) + 2 * (d * h + h * cfg.charmap.n_classes)
    return float(total) * frames


__all__ = ["FingerspellingModel", "count_parameters", "flops_per_sequence", "position_table"]
