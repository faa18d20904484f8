"""Dropout on a CPU as one pass forward and one backward, with no mask kept (numba).

`torch.rand_like(x) >= rate` draws each element from the CPU generator (mt19937, one element at
a time): at the seed's shapes the attention dropout on [B, heads, T, T] was about 5% of a float32
training step, and with the compare, the mask's conversion and the multiplies, four passes over
a 111 MB tensor forward and a kept mask for backward. Here each element's draw is a
counter-based hash of (its index, a key): forward writes `x * keep * scale` in one pass, and
backward recomputes the same draws from the same key to write `g * keep * scale` in one pass,
keeping nothing but the key.

The draw is a 24-bit uniform u in [0, 1) (as `torch.rand` in float32) and an element is kept
where u >= rate, exactly `torch.rand_like(x) >= rate`'s rule; the scale is float32
1 / (1 - rate), applied as `x * (keep * scale)` (the same bits as the torch path). The hash is
two rounds of a 32-bit integer mixer (Wellons' lowbias32) over the index, keyed by two 32-bit
words drawn from torch's generator, so a run is reproducible from its seed, a resumed run draws
what the uninterrupted one did, and the draws do not depend on how many threads split the work.
float32 and bf16 tensors (bf16 rounded to nearest even, as torch multiplies it); anything else
goes to the torch path.
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import numba
import numpy as np
import torch

_M1, _M2 = np.uint32(0x7FEB352D), np.uint32(0x846CA68B)
_S15, _S16, _S8 = np.uint32(15), np.uint32(16), np.uint32(8)
_MAX_ELEMENTS = 1 << 32  # the index is a 32-bit counter


@numba.njit(inline="always")
def _mix(x):  # pragma: no cover - compiled
    # numba widens integer arithmetic to 64 bits: every product is cut back to 32
    x = np.uint32(x ^ (x >> _S16))
    x = np.uint32(x * _M1)
    x = np.uint32(x ^ (x >> _S15))
    x = np.uint32(x * _M2)
    return np.uint32(x ^ (x >> _S16))


@numba.njit(nogil=True, cache=True)
def _float32_kernel(src, dst, key0, key1, threshold, scale, first, last):  # pragma: no cover - compiled
    zero = np.float32(0.0)
    for i in range(first, last):
        h = _mix(np.uint32(_mix(np.uint32(np.uint32(i) ^ key0)) ^ key1))
        dst[i] = src[i] * (scale if np.uint32(h >> _S8) >= threshold else zero)


@numba.njit(nogil=True, cache=True)
def _bf16_kernel(src, dst, key0, key1, threshold, scale, first, last):  # pragma: no cover - compiled
    """src, dst: bf16 bit patterns (uint16). f32 = bits << 16; the product rounded to nearest even."""
    zero = np.float32(0.0)
    one = np.uint32(1)
    ibuf = np.empty(1, dtype=np.uint32)
    fbuf = ibuf.view(np.float32)  # the same 4 bytes: a bit cast either way
    for i in range(first, last):
        h = _mix(np.uint32(_mix(np.uint32(np.uint32(i) ^ key0)) ^ key1))
        ibuf[0] = np.uint32(src[i]) << _S16
        p = fbuf[0] * (scale if np.uint32(h >> _S8) >= threshold else zero)
        fbuf[0] = p
        bits = ibuf[0]
        if p != p:  # NaN stays a (quiet) NaN
            dst[i] = np.uint16((bits >> _S16) | np.uint32(0x40))
        else:
            dst[i] = np.uint16((bits + np.uint32(0x7FFF) + ((bits >> _S16) & one)) >> _S16)


_POOL: ThreadPoolExecutor | None = None


def _pool() -> ThreadPoolExecutor:
    global _POOL
    if _POOL is None:
        _POOL = ThreadPoolExecutor(max(1, torch.get_num_threads()), thread_name_prefix="aslfr-dropout")
    return _POOL


def _apply(src: torch.Tensor, keys: tuple[int, int], rate: float) -> torch.Tensor:
    dst = torch.empty_like(src)
    if src.dtype == torch.bfloat16:
        kernel, a, b = _bf16_kernel, src.view(torch.int16).numpy().view(np.uint16), dst.view(torch.int16).numpy().view(np.uint16)
    else:
        kernel, a, b = _float32_kernel, src.numpy(), dst.numpy()
    a, b = a.reshape(-1), b.reshape(-1)
    threshold = np.uint32(math.ceil(rate * (1 << 24)))
    scale = np.float32(1.0 / (1.0 - rate))
    k0, k1 = np.uint32(keys[0]), np.uint32(keys[1])
    n, parts = a.shape[0], max(1, torch.get_num_threads())
    bounds = [n * p // parts for p in range(parts + 1)]
    if parts == 1 or n < 65536:
        kernel(a, b, k0, k1, threshold, scale, 0, n)
    else:
        for f in [_pool().submit(kernel, a, b, k0, k1, threshold, scale, bounds[p], bounds[p + 1])
                  for p in range(parts)]:
            f.result()
    return dst


class _Dropout(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, rate: float) -> torch.Tensor:  # noqa: ANN001
        keys = tuple(int(k) for k in torch.randint(0, 1 << 32, (2,), dtype=torch.int64))
        ctx.keys, ctx.rate = keys, rate
        return _apply(x, keys, rate)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        return _apply(grad.contiguous(), ctx.keys, ctx.rate), None


def fits(x: torch.Tensor) -> bool:
    """Whether `x` takes this path: a contiguous float32 or bf16 CPU tensor, in eager mode."""
    if torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.onnx.is_in_onnx_export():
        return False
    return (x.device.type == "cpu" and x.dtype in (torch.float32, torch.bfloat16) and x.is_contiguous()
            and 0 < x.numel() < _MAX_ELEMENTS)


def dropout(x: torch.Tensor, rate: float) -> torch.Tensor:
    """Inverted dropout of `x` at `rate` (0 < rate < 1) in training; see the module docstring."""
    return _Dropout.apply(x, rate)


__all__ = ["dropout", "fits"]
