"""The 2nd place's network family (SECOND-PLACE-SPEC 1.3-4): all 543 landmarks, a Conv1D +
Transformer encoder with one stride-2 block, a GRU CTC head and a one-block attention decoder,
trained on 0.75 attention + 0.25 CTC.

Pinned to the 2nd place's own Keras code by tests/test_second_place.py (the fixtures in
`fixtures/second_place/`): preprocessing, eval and training-mode outputs with padding,
BatchNorm statistics after a training call, and the two losses.

What differs from the seed's family (`aslfr.model`), each a trap the spec names:
- BatchNorm is the pre-norm of every block (Conv1D and Transformer alike), masked to the valid
  frames (or tokens) in training, momentum 0.95, epsilon 1e-3;
- the depthwise conv is centred ("same"), not causal, and its padded steps are zeroed first;
  the stride-2 block pads as TF's SAME does (7 left, 8 right for an even length; 8 and 8 for
  an odd one), has no residual, and halves the mask with [::2];
- the attention scale is the model width's, 192^-0.5, with the per-head q|k|v layout (the
  seed's `Attention` is exactly that and is reused);
- the CTC head is a GRU that carries its state over padded steps, so a padded step repeats
  the last valid output, as Keras' masked RNN does.

Token ids: 0 is pad and CTC blank, 1..n the characters (the character map's index + 1), n+1
SOS and n+2 EOS; for the competition's 59 characters that is the 2nd place's vocabulary of 62.

Decoding (CTC greedy, attention greedy, joint CTC/attention) is not here: `aslfr.decoding`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from aslfr.kernels import Linear
from aslfr.model import ECA, Attention, BatchNorm, BranchDropout, dropout

#: the 2nd place's landmarks: all of them, in the competition's order (face 0-467, left hand
#: 468-488, pose 489-521, right hand 522-542), x, y, z each
N_LANDMARKS = 543
N_INPUTS = 3 * N_LANDMARKS
LEFT_HAND = list(range(468, 489))
RIGHT_HAND = list(range(522, 543))
#: the mirror pairs of the handedness flip (SECOND-PLACE-SPEC 1.2): LEFT[i] <-> RIGHT[i]
LEFT = (list(range(248, 468)) + LEFT_HAND + [493, 494, 495, 497, 499, 501, 503, 505, 507, 509, 511, 513]
        + [515, 517, 519, 521])
RIGHT = ([3, 7] + list(range(20, 94)) + list(range(95, 151)) + list(range(153, 164)) + [165, 166, 167]
         + list(range(169, 175)) + list(range(176, 195)) + [196, 198] + list(range(201, 248)) + RIGHT_HAND
         + [490, 491, 492, 496, 498, 500, 502, 504, 506, 508, 510, 512] + [514, 516, 518, 520])
#: the flip's gather: flipped[:, i] = x[:, MIRROR[i]]
MIRROR = list(range(N_LANDMARKS))
for _l, _r in zip(LEFT, RIGHT):
    MIRROR[_l], MIRROR[_r] = _r, _l
assert len(LEFT) == len(RIGHT) == 257 and sorted(MIRROR) == list(range(N_LANDMARKS))

#: padded frames hold this value in every feature (the 2nd place's Masking(-100))
PAD_VALUE = -100.0
MAX_TOKENS = 64  # decoder positions: the longest phrase + SOS or EOS


#: Kaggle's columns hold coordinate c of landmark l at c * 543 + l (every x, then y, then z); the
#: features put it at 3 * l + c (landmark-major, the 2nd place's flatten of [T, 543, 3])
FEATURE_ORDER = torch.tensor([c * N_LANDMARKS + lm for lm in range(N_LANDMARKS) for c in range(3)])
#: the flip's column gather: flipped[:, c * 543 + i] = x[:, c * 543 + MIRROR[i]]
MIRROR_COLUMNS = torch.tensor([c * N_LANDMARKS + MIRROR[i] for c in range(3) for i in range(N_LANDMARKS)])
LEFT_HAND_COLUMNS = torch.tensor([c * N_LANDMARKS + i for c in range(3) for i in LEFT_HAND])
RIGHT_HAND_COLUMNS = torch.tensor([c * N_LANDMARKS + i for c in range(3) for i in RIGHT_HAND])


def preprocess(frames: torch.Tensor, max_len: int = 768, tf_sums: bool = False) -> torch.Tensor:
    """Raw landmarks [T, 543, 3] (NaN = not detected) -> features [T', 1629], T' <= max_len:
    all-NaN frames dropped; a left-handed signer (fewer NaN values in the left hand than in the
    right, counted over all kept frames) mirrored; the first max_len frames; each of x, y, z
    z-scored over every frame and landmark (NaN-aware, population std, no epsilon); landmark-major
    features (3 * landmark + coordinate); NaN -> 0 (SECOND-PLACE-SPEC 1.3).

    The work is done on Kaggle's [T, 1629] columns, the on-device model's input, in 2-D tensors
    only (`preprocess_exportable` is the same code without a data-dependent shape).

    `tf_sums`: the statistics' sums accumulated one value after another in float32, in frame
    then landmark order, as TensorFlow's reductions did in the 2nd place's own pipeline (over
    768 frames that moves the std by about 2e-5 relative, and its logits by up to 7e-3: enough
    to change a decision its fixtures pin). The default sums accurately."""
    x = frames.permute(0, 2, 1).reshape(frames.shape[0], N_INPUTS)
    x = x[~torch.isnan(x).all(-1)]
    return _normalise(_flip(x)[:max_len], tf_sums)


def preprocess_exportable(columns: torch.Tensor, max_len: int = 768) -> tuple[torch.Tensor, torch.Tensor]:
    """`preprocess` for the on-device graph, with no boolean indexing: Kaggle's columns [T, 1629],
    T >= 1 -> (features [max(min(kept, max_len), 1), 1629], whether any frame was kept). The
    kept frames go first, in order (a sort on whether a frame is all NaN), and the handedness is
    decided over that whole buffer: each all-NaN frame adds the same count of NaN to both hands.
    The length is then taken from the data (`.item()`, checked) and the buffer narrowed to it, as
    the seed's on-device model does (EXPORT-NOTES); with no frame kept, one all-NaN frame is left,
    whose features are zeros."""
    t = columns.shape[0]
    dropped = torch.isnan(columns).all(-1)
    order = torch.argsort(dropped.to(torch.float32) * t + torch.arange(t, dtype=torch.float32))
    kept = (~dropped).sum()
    n = int(torch.clamp(kept, min=1, max=max_len).item())
    torch._check(n >= 1)
    torch._check(n <= t)
    x = _flip(columns.index_select(0, order)).narrow(0, 0, n)
    return _normalise(x, False), kept > 0


def _flip(x: torch.Tensor) -> torch.Tensor:
    """[T, 1629] columns, mirrored where the left hand has fewer NaN values than the right."""
    nan = torch.isnan(x)
    left = nan.index_select(1, LEFT_HAND_COLUMNS.to(x.device)).sum()
    right = nan.index_select(1, RIGHT_HAND_COLUMNS.to(x.device)).sum()
    flipped = torch.cat([1 - x[:, :N_LANDMARKS], x[:, N_LANDMARKS:]], 1).index_select(1, MIRROR_COLUMNS.to(x.device))
    return torch.where(left < right, flipped, x)


def _channels(x: torch.Tensor) -> torch.Tensor:
    """[1629, 3]: 1 where a column holds that coordinate."""
    return (torch.arange(N_INPUTS, device=x.device)[:, None] // N_LANDMARKS
            == torch.arange(3, device=x.device)[None, :]).to(x.dtype)


def _normalise(x: torch.Tensor, tf_sums: bool) -> torch.Tensor:
    """[T, 1629] columns -> z-scored landmark-major features; per-channel sums and their
    broadcast back are products with the [1629, 3] channel indicator (2-D all through)."""
    valid = ~torch.isnan(x)
    zero = torch.zeros((), dtype=x.dtype)
    e = _channels(x)
    count = valid.to(x.dtype).sum(0) @ e                                    # [3]
    total = _sequential_sum if tf_sums else (lambda v: v.sum(0) @ e)
    mean = total(torch.where(valid, x, zero)) / count
    mean = torch.where(torch.isnan(mean), torch.tensor([0.5, 0.5, 0.0], dtype=x.dtype), mean)
    d = x - e @ mean
    std = torch.sqrt(total(torch.where(valid, d * d, zero)) / count)
    out = (d / (e @ std)).index_select(1, FEATURE_ORDER.to(x.device))
    return torch.where(torch.isnan(out), zero, out)


def _sequential_sum(v: torch.Tensor) -> torch.Tensor:
    """Per channel, the values of [T, 1629] columns added one after another in their own
    precision, in frame then landmark order (NumPy's cumsum: torch's accumulates float32 in
    float64)."""
    import numpy as np

    flat = v.reshape(v.shape[0], 3, N_LANDMARKS).permute(0, 2, 1).reshape(-1, 3).numpy()
    if not len(flat):
        return torch.zeros(3, dtype=v.dtype)
    return torch.from_numpy(np.cumsum(flat, 0, dtype=flat.dtype)[-1].copy())


@dataclass(frozen=True)
class CTCAttentionNet:
    """The architecture. `layers`: C = Conv1D block, T = Transformer block, D = the stride-2 Conv1D
    block (no residual, no dropout); the 2nd place's 17 layers are CCCTCCCTDCCCTCCCT."""
    vocab: int = 62
    dim: int = 192
    layers: str = "CCCTCCCTDCCCTCCCT"
    heads: int = 4
    kernel_size: int = 17
    conv_expand: int = 4
    ffn_expand: int = 2
    block_dropout: float = 0.2        # per sample, a whole residual branch
    attention_dropout: float = 0.2
    head_dropout: float = 0.5         # CTC head and decoder classifier, elementwise
    decoder_blocks: int = 1
    bn_group: int = 16                # BatchNorm statistics per group of this many samples

    def check(self) -> "CTCAttentionNet":
        if set(self.layers) - set("CTD") or not self.layers:
            raise ValueError(f"layers={self.layers!r}: expected a string of C, T and D")
        if self.kernel_size % 2 == 0:
            raise ValueError(f"kernel_size={self.kernel_size}: expected an odd size (a centred conv)")
        if self.dim % self.heads:
            raise ValueError(f"heads={self.heads}: the width {self.dim} must split evenly over the heads")
        return self


class SameDepthwiseConv(nn.Module):
    """Depthwise conv along time, centred, stride 1 or 2, padded as TF's SAME (stride 2: 7 left
    and 8 right for an even length, 8 and 8 for an odd one, with kernel 17)."""

    def __init__(self, channels: int, kernel_size: int, stride: int) -> None:
        super().__init__()
        self.kernel_size, self.stride = kernel_size, stride
        self.weight = nn.Parameter(torch.empty(channels, 1, kernel_size))
        nn.init.kaiming_uniform_(self.weight, a=math.sqrt(5))

    #: set by the on-device model (one unpadded sequence): the stride-2 conv's SAME padding
    #: follows the parity of the length read from the data, not a guard on the shape
    on_device = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """[B, T, C] -> [B, ceil(T / stride), C]."""
        if self.stride == 2 and self.on_device:
            return self._one_sequence(x)
        n = x.shape[1]
        if self.stride == 1:  # k - 1 in all, written as constants (odd k): the exported pad is static
            total = self.kernel_size - 1
        else:
            out = -(-n // self.stride)
            total = max((out - 1) * self.stride + self.kernel_size - n, 0)
        h = F.pad(x, (0, 0, total // 2, total - total // 2))[:, None].permute(0, 3, 1, 2)  # [B, C, 1, T + pad]
        w = self.weight[:, :, None]
        y = F.conv2d(h, w, stride=(1, self.stride), groups=w.shape[0])
        return y.permute(0, 2, 3, 1).reshape(x.shape[0], -1, x.shape[2])

    def _one_sequence(self, x: torch.Tensor) -> torch.Tensor:
        """Stride 2 over one sequence [1, n, C]: SAME pads k//2 - 1 on the left of an even n and
        k//2 of an odd one, so output j is the centred stride-1 conv at 2j + 1 or 2j. Both phases
        are read from [steps, 2C] rows with ceil(n / 2) steps counted from the data (TFLite gave
        a stride-2 slice of an odd length one step too few; a gather exported to an op version
        tflite-runtime 2.14 lacks; onnx2tf takes a 4-D tensor as an image)."""
        if x.shape[0] != 1:
            raise ValueError("the on-device stride-2 conv takes one sequence")
        k = self.kernel_size
        h = F.pad(x, (0, 0, k // 2, k // 2))[:, None].permute(0, 3, 1, 2)
        z = F.conv2d(h, self.weight[:, :, None], groups=self.weight.shape[0]).permute(0, 2, 3, 1)[:, 0]  # [1, n, C]
        n = torch.ones_like(z[0, :, 0]).sum().to(torch.int64)
        steps = int(((n + 1) // 2).item())
        torch._check(steps >= 1)
        torch._check(2 * steps <= z.shape[1] + 2)
        c = z.shape[2]
        pairs = torch.cat([z, z[:, :2] * 0], 1)[0].narrow(0, 0, 2 * steps).reshape(steps, 2 * c)
        return torch.where(n % 2 == 0, pairs[None, :, c:], pairs[None, :, :c])


class ConvBlock(nn.Module):
    def __init__(self, net: CTCAttentionNet, stride: int = 1) -> None:
        super().__init__()
        d, hidden = net.dim, net.dim * net.conv_expand
        self.stride = stride
        self.pre_bn = BatchNorm(d, group=net.bn_group)
        self.expand = Linear(d, hidden)
        self.depthwise = SameDepthwiseConv(hidden, net.kernel_size, stride)
        self.bn = BatchNorm(hidden, group=net.bn_group)
        self.eca = ECA()
        self.project = Linear(hidden, d)
        self.drop = BranchDropout(net.block_dropout if stride == 1 else 0.0)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        h = F.silu(self.expand(self.pre_bn(x, mask)))
        if mask is not None:  # padded steps are zero where the conv reads them
            h = h * mask[..., None].to(h.dtype)
        h = self.depthwise(h)
        out_mask = mask[:, ::self.stride] if mask is not None else None
        h = self.project(self.eca(self.bn(h, out_mask), out_mask))
        if self.stride != 1:
            return h, out_mask
        return self.drop.residual(x, h), mask


class TransformerBlock(nn.Module):
    def __init__(self, net: CTCAttentionNet) -> None:
        super().__init__()
        d = net.dim
        self.bn1 = BatchNorm(d, group=net.bn_group)
        self.attn = Attention(d, net.heads, net.attention_dropout)
        self.drop1 = BranchDropout(net.block_dropout)
        self.bn2 = BatchNorm(d, group=net.bn_group)
        self.fc1 = Linear(d, d * net.ffn_expand, bias=False)
        self.fc2 = Linear(d * net.ffn_expand, d, bias=False)
        self.drop2 = BranchDropout(net.block_dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor | None]:
        x = self.drop1.residual(x, self.attn(self.bn1(x, mask), mask))
        return self.drop2.residual(x, self.fc2(F.silu(self.fc1(self.bn2(x, mask))))), mask


class Encoder(nn.Module):
    def __init__(self, net: CTCAttentionNet) -> None:
        super().__init__()
        self.stem = Linear(N_INPUTS, net.dim, bias=False)
        self.blocks = nn.ModuleList(
            ConvBlock(net) if kind == "C" else ConvBlock(net, stride=2) if kind == "D" else TransformerBlock(net)
            for kind in net.layers)
        self.norm = BatchNorm(net.dim, group=net.bn_group)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:
        """[B, T, 1629] (padded frames anything: they are zeroed) -> [B, L, dim] and its mask."""
        if mask is not None:
            x = x * mask[..., None].to(x.dtype)
        x = self.stem(x)
        for block in self.blocks:
            x, mask = block(x, mask)
        return self.norm(x, mask), mask


class GRU(nn.Module):
    """One unidirectional GRU layer (reset after, separate input and recurrent biases, as Keras'
    GRUCell); over padded steps it keeps its state, so they repeat the last valid output."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.rnn = nn.GRU(dim, dim, batch_first=True)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        out, _ = self.rnn(x)
        if lengths is None:
            return out
        last = (lengths.clamp(min=1) - 1)[:, None]
        t = torch.arange(out.shape[1], device=out.device)[None]
        index = torch.minimum(t, last)                                         # [B, L]
        return out.gather(1, index[..., None].expand(-1, -1, out.shape[2]))


class CTCHead(nn.Module):
    def __init__(self, net: CTCAttentionNet) -> None:
        super().__init__()
        self.gru = GRU(net.dim)
        self.hidden = Linear(net.dim, 2 * net.dim)
        self.rate = net.head_dropout
        self.out = Linear(2 * net.dim, net.vocab)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor | None = None) -> torch.Tensor:
        return self.out(dropout(self.hidden(self.gru(x, lengths)), self.rate, self.training))


class MultiHeadAttention(nn.Module):
    """Separate q, k, v and output projections without bias; head h takes channels
    [h * d / heads, (h + 1) * d / heads); scale = width^-0.5 (the 2nd place's)."""

    def __init__(self, dim: int, heads: int, rate: float) -> None:
        super().__init__()
        self.heads, self.scale, self.rate = heads, dim ** -0.5, rate
        self.q, self.k, self.v, self.out = (Linear(dim, dim, bias=False) for _ in range(4))

    def split(self, x: torch.Tensor) -> torch.Tensor:  # [B, T, C] -> [B, H, T, C / H]
        return x.reshape(x.shape[0], x.shape[1], self.heads, -1).transpose(1, 2)

    def keys(self, memory: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The keys and values of `memory` (precomputed once for decoding)."""
        return self.split(self.k(memory)), self.split(self.v(memory))

    def attend(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               allowed: torch.Tensor | None = None) -> torch.Tensor:
        """`allowed` broadcasts to [B, H, Tq, Tk], True where a query may see a key."""
        q = self.split(self.q(x)) * self.scale
        scores = q @ k.transpose(-1, -2)
        if allowed is not None:
            scores = scores.masked_fill(~allowed, torch.finfo(scores.dtype).min)
        attn = dropout(torch.softmax(scores, dim=-1), self.rate, self.training)
        b, t = x.shape[0], x.shape[1]
        return self.out((attn @ v).transpose(1, 2).reshape(b, t, -1))

    def attend_row(self, x: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
        """`attend` for one query row x [1, C] of one sequence against its key and value rows
        k, v [N, C] (`keys` of [N, C] rows), 2-D all through: the heads are the columns of a
        [C, H] indicator (the on-device decoder's form: onnx2tf re-lays tensors of more axes)."""
        c = x.shape[1]
        heads = (torch.arange(c, device=x.device)[:, None] // (c // self.heads)
                 == torch.arange(self.heads, device=x.device)[None]).to(x.dtype)          # [C, H]
        q = self.q(x).reshape(c, 1) * self.scale
        attn = torch.softmax(k @ (q * heads), dim=0)                                      # [N, H]
        return self.out(((attn @ heads.t()) * v).sum(0, keepdim=True))                   # [1, C]


class DecoderBlock(nn.Module):
    def __init__(self, net: CTCAttentionNet) -> None:
        super().__init__()
        d = net.dim
        self.bn1 = BatchNorm(d, group=net.bn_group)
        self.self_attn = MultiHeadAttention(d, net.heads, net.attention_dropout)
        self.bn2 = BatchNorm(d, group=net.bn_group)
        self.cross_attn = MultiHeadAttention(d, net.heads, net.attention_dropout)
        self.bn3 = BatchNorm(d, group=net.bn_group)
        self.fc1 = Linear(d, d * net.ffn_expand, bias=False)
        self.fc2 = Linear(d * net.ffn_expand, d, bias=False)

    def forward(self, x: torch.Tensor, token_mask: torch.Tensor, memory_kv: tuple[torch.Tensor, torch.Tensor],
                memory_mask: torch.Tensor | None) -> torch.Tensor:
        t = x.shape[1]
        causal = torch.ones(t, t, dtype=torch.bool, device=x.device).tril()
        h = self.bn1(x, token_mask)
        k, v = self.self_attn.keys(h)
        x = x + self.self_attn.attend(h, k, v, causal[None, None] & token_mask[:, None, None, :])
        cross = memory_mask[:, None, None, :] if memory_mask is not None else None
        x = x + self.cross_attn.attend(self.bn2(x, token_mask), *memory_kv, cross)
        return x + self.fc2(F.silu(self.fc1(self.bn3(x, token_mask))))

    def step(self, x: torch.Tensor, cache: list) -> tuple[torch.Tensor, list]:
        """One new position x [1, dim] of one sequence against the cached key and value rows of
        the earlier ones and the encoder's (`cache` = [self k, self v, cross k, cross v], [N, dim]
        each; the self-attention's None before the first position); no mask: decoding runs on
        one unpadded sequence, as the 2nd place's decoder does."""
        sk, sv, ck, cv = cache
        h = self.bn1(x)
        k, v = self.self_attn.k(h), self.self_attn.v(h)
        sk, sv = (k, v) if sk is None else (torch.cat([sk, k], 0), torch.cat([sv, v], 0))
        x = x + self.self_attn.attend_row(h, sk, sv)
        x = x + self.cross_attn.attend_row(self.bn2(x), ck, cv)
        return x + self.fc2(F.silu(self.fc1(self.bn3(x)))), [sk, sv, ck, cv]


class AttentionDecoder(nn.Module):
    def __init__(self, net: CTCAttentionNet) -> None:
        super().__init__()
        self.token = nn.Embedding(net.vocab, net.dim)
        self.position = nn.Embedding(MAX_TOKENS, net.dim)
        nn.init.uniform_(self.token.weight, -0.05, 0.05)
        nn.init.uniform_(self.position.weight, -0.05, 0.05)
        self.blocks = nn.ModuleList(DecoderBlock(net) for _ in range(net.decoder_blocks))
        self.rate = net.head_dropout
        self.classifier = Linear(net.dim, net.vocab)

    def forward(self, tokens: torch.Tensor, memory: torch.Tensor, memory_mask: torch.Tensor | None) -> torch.Tensor:
        """Teacher forcing: token ids [B, Lt] (0 = pad) -> logits [B, Lt, vocab]."""
        x = self.token(tokens) + self.position.weight[: tokens.shape[1]]
        token_mask = tokens != 0
        for block in self.blocks:
            x = block(x, token_mask, block.cross_attn.keys(memory), memory_mask)
        return self.classifier(dropout(x, self.rate, self.training))

    def start(self, memory: torch.Tensor) -> list[list]:
        """The decoding cache of one sequence's encoder output [L, dim]: per block, no
        self-attention keys yet and the cross-attention's key and value rows, computed once."""
        return [[None, None, block.cross_attn.k(memory), block.cross_attn.v(memory)] for block in self.blocks]

    def step(self, tokens: torch.Tensor, position: int, cache: list[list]) -> tuple[torch.Tensor, list[list]]:
        """One sequence's token id [1] at `position` -> logits [1, vocab] and the cache with this
        position in."""
        x = self.token(tokens) + self.position.weight[position:position + 1]             # [1, dim]
        new = []
        for block, c in zip(self.blocks, cache):
            x, c = block.step(x, c)
            new.append(c)
        return self.classifier(x), new


class CTCAttentionModel(nn.Module):
    """Features [B, T, 1629] and decoder inputs [B, Lt] -> (attention logits [B, Lt, V], CTC logits
    [B, L, V]), L = ceil(T / 2); `lengths` [B]: the valid frames of each (None: all valid)."""

    def __init__(self, net: CTCAttentionNet) -> None:
        super().__init__()
        self.net = net.check()
        self.encoder = Encoder(net)
        self.decoder = AttentionDecoder(net)
        self.ctc = CTCHead(net)

    @staticmethod
    def frame_mask(x: torch.Tensor, lengths: torch.Tensor | None) -> torch.Tensor | None:
        if lengths is None:
            return None
        return torch.arange(x.shape[1], device=x.device)[None] < lengths[:, None]

    def encode(self, x: torch.Tensor, lengths: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
        """(encoder output [B, L, dim], its mask or None, its lengths or None)."""
        memory, mask = self.encoder(x, self.frame_mask(x, lengths))
        return memory, mask, (None if lengths is None else (lengths + 1) // 2)

    def forward(self, x: torch.Tensor, tokens: torch.Tensor,
                lengths: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        memory, mask, enc_lengths = self.encode(x, lengths)
        return self.decoder(tokens, memory, mask), self.ctc(memory, enc_lengths)


def attention_loss(logits: torch.Tensor, targets: torch.Tensor, smoothing: float = 0.25) -> torch.Tensor:
    """Cross-entropy with Keras' label smoothing (target (1 - s) one-hot + s / V), pad targets
    (0) left out, summed over tokens and averaged over sequences (SECOND-PLACE-SPEC 4.1)."""
    logp = torch.log_softmax(logits.float(), -1)
    v = logits.shape[-1]
    nll = -logp.gather(-1, targets[..., None].long())[..., 0]
    per_token = (1 - smoothing) * nll - (smoothing / v) * logp.sum(-1)
    return (per_token * (targets != 0)).sum() / logits.shape[0]


def ctc_loss(logits: torch.Tensor, targets: torch.Tensor, logit_lengths: torch.Tensor | None) -> torch.Tensor:
    """CTC (blank 0) negative log-likelihood per sequence, averaged over sequences with no length
    normalisation; `logit_lengths` None: every sequence its padded length (what the 2nd place
    optimised under bf16, SECOND-PLACE-SPEC 4.2). A sequence too short for its phrase (no
    alignment: an infinite loss, which at the 2nd place's 384 padded steps never happens) counts
    0 instead of stopping the run with an infinite loss."""
    b, t = logits.shape[:2]
    logp = torch.log_softmax(logits.float(), -1).transpose(0, 1)          # [L, B, V]
    lengths = logit_lengths if logit_lengths is not None else torch.full((b,), t, dtype=torch.long)
    target_lengths = (targets != 0).sum(-1)
    return F.ctc_loss(logp, targets.long(), lengths.long(), target_lengths.long(), blank=0,
                      reduction="none", zero_infinity=True).mean()


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(all, trainable): the BatchNorm moving statistics count as non-trainable, as in Keras."""
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    stats = sum(b.numel() for name, b in model.named_buffers() if name.endswith(("running_mean", "running_var")))
    return trainable + stats, trainable


__all__ = ["CTCAttentionModel", "CTCAttentionNet", "MIRROR", "N_INPUTS", "PAD_VALUE", "attention_loss",
           "count_parameters", "ctc_loss", "preprocess"]
