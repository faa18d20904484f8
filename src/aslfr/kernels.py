"""The float32 matmul kernels the network's Linear layers run on a CPU, chosen by measurement.

PyTorch's CPU build sends a float32 `F.linear` and its two backward products to its BLAS (MKL's
SGEMM); TensorFlow sends them to oneDNN. Which is faster depends on the CPU, not on its vendor
string: on an AVX2-only AMD EPYC the two were within 0-22% of each other, while on an AMD EPYC
with AVX-512 MKL does not run its AVX-512 kernels and oneDNN was 1.7-2.3x faster at the seed's
shapes (`benchmarks/matmul.py`). So every Linear of the network goes through `linear()` here,
which, for each of its three products (forward `x W^T + b`, grad-input `g W`, grad-weight
`g^T x`) and each shape, runs whichever kernel measured fastest on this machine:

- `blas`: `addmm`/`mm`, as PyTorch does by default;
- `onednn`: oneDNN's inner product on plain float32 tensors (`mkldnn::_linear_pointwise`; for
  the grad-weight product, oneDNN's backward-weights primitive).

Both are float32 throughout (no bf16 or TF32 inside), so the numbers are the same up to the
order of the float32 sums. The choice is measured once per machine, product and shape (M
rounded up to a power of two), on the call's own tensors, and kept in a small JSON file
(`$ASLFR_CACHE_DIR`, default `~/.cache/aslfr`) keyed by the CPU, its flags, the thread count
and the torch build, so that a rerun on the same machine takes the same kernels and gives the
same bits. `ASLFR_MATMUL=blas|onednn|auto` (default auto) forces one.

Whatever is not plain float32 eager work on a CPU goes to `F.linear` unchanged: autocast
(bf16 has its own oneDNN path), other devices, tracing and ONNX export, torch.compile.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import statistics
import threading
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from aslfr.files import write_json

ENV = "ASLFR_MATMUL"
CHOICES = ("auto", "blas", "onednn")
PRODUCTS = ("forward", "grad_input", "grad_weight")
_ONEDNN_OK = torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_linear_pointwise")


def setting() -> str:
    """`ASLFR_MATMUL`, checked: auto, blas or onednn."""
    value = os.environ.get(ENV, "auto").strip().lower() or "auto"
    if value not in CHOICES:
        raise ValueError(f"{ENV}={value}: expected auto, blas or onednn")
    if value == "onednn" and not _ONEDNN_OK:
        raise ValueError(f"{ENV}=onednn: this torch build has no oneDNN")
    return value


# --------------------------------------------------------------------------------------------
# The kernels: each product two ways, on 2-D float32 tensors
# --------------------------------------------------------------------------------------------

def _forward_blas(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return torch.addmm(b, x, w.t()) if b is not None else x.mm(w.t())


def _forward_onednn(x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:
    return torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")


def _grad_input_blas(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return g.mm(w)


def _grad_input_onednn(g: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    # g W as an inner product with the weight [in, out]: a copy of the (small) weight only
    return torch.ops.mkldnn._linear_pointwise(g, w.t().contiguous(), None, "none", [], "")


def _grad_weight_blas(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    return g.t().mm(x)


def _grad_weight_onednn(g: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    gw, _ = torch.ops.aten.mkldnn_linear_backward_weights(g.to_mkldnn(), x.to_mkldnn(),
                                                         torch.empty(g.shape[1], x.shape[1]), False)
    return gw


KERNELS = {"forward": {"blas": _forward_blas, "onednn": _forward_onednn},
           "grad_input": {"blas": _grad_input_blas, "onednn": _grad_input_onednn},
           "grad_weight": {"blas": _grad_weight_blas, "onednn": _grad_weight_onednn}}


# --------------------------------------------------------------------------------------------
# The choice: measured once per machine, product and shape
# --------------------------------------------------------------------------------------------

def machine_signature() -> str:
    """What decides the kernels' speed: the CPU and its flags, the thread count, the torch build."""
    from aslfr.hardware import ISA_LIMITS, cpu_flags, cpu_model

    limits = [f"{k}={os.environ.get(k, '')}" for k in ISA_LIMITS]  # settings that change which code the libraries run
    parts = [cpu_model(), " ".join(sorted(cpu_flags())), str(torch.get_num_threads()), torch.__version__,
             torch.__config__.show(), *limits]
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def cache_path() -> Path:
    root = os.environ.get("ASLFR_CACHE_DIR") or (Path.home() / ".cache" / "aslfr")
    return Path(root) / "matmul-kernels.json"


class Chooser:
    """The kernel per (product, shape): from the cache file, else measured on the first call's
    tensors and added to it."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._signature: str | None = None
        self._choices: dict[str, str] | None = None
        self._threads = 0
        self.measured: dict[str, dict[str, float]] = {}  # key -> seconds per kernel, this process

    @staticmethod
    def key(product: str, m: int, k: int, n: int) -> str:
        return f"{product}:{1 << max(0, math.ceil(math.log2(max(m, 1))))}x{k}x{n}"

    def _load(self) -> dict[str, str]:
        threads = torch.get_num_threads()  # part of the signature: the pipeline trains on 1 thread beside control
        if self._choices is None or threads != self._threads:
            self._threads, self._signature = threads, machine_signature()
            self._choices = dict(_read_cache(cache_path()).get(self._signature, {}))
        return self._choices

    def choose(self, product: str, m: int, k: int, n: int, args: tuple) -> str:
        forced = setting()
        if forced != "auto":
            return forced
        if not _ONEDNN_OK:
            return "blas"
        key = self.key(product, m, k, n)
        with self._lock:
            choices = self._load()
            if key not in choices:
                times = _time_kernels(KERNELS[product], args)
                self.measured[key] = times
                choices[key] = min(times, key=times.get)
                _update_cache(cache_path(), self._signature, {key: choices[key]})
            return choices[key]

    def summary(self) -> str:
        """The kernels chosen so far, per product, in words."""
        if setting() != "auto":
            return f"{setting()} for every product ({ENV})"
        if not _ONEDNN_OK:
            return "blas (this torch build has no oneDNN)"
        choices = self._load()
        if not choices:
            return "none measured yet"
        words = []
        for product in PRODUCTS:
            got = [v for k, v in choices.items() if k.startswith(product + ":")]
            if got:
                words.append(f"{product} oneDNN {got.count('onednn')}/{len(got)} shapes")
        return "; ".join(words)


def _time_kernels(kernels: dict, args: tuple, rounds: int = 5) -> dict[str, float]:
    """Median seconds of each kernel on `args`, timed in turn call by call after one untimed call
    each (so that a change in a shared machine's speed hits all of them alike); small products get
    more rounds."""
    with torch.no_grad():
        for fn in kernels.values():
            fn(*args)
        probe = time.perf_counter()
        next(iter(kernels.values()))(*args)
        if time.perf_counter() - probe < 1e-3:
            rounds = 25
        times: dict[str, list[float]] = {name: [] for name in kernels}
        for _ in range(rounds):
            for name, fn in kernels.items():
                t = time.perf_counter()
                fn(*args)
                times[name].append(time.perf_counter() - t)
    return {name: statistics.median(v) for name, v in times.items()}


def _read_cache(path: Path) -> dict:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    if not isinstance(data, dict):
        return {}
    return {sig: {k: v for k, v in table.items() if isinstance(k, str) and v in ("blas", "onednn")}
            for sig, table in data.items() if isinstance(table, dict)}


def _update_cache(path: Path, signature: str, new: dict[str, str]) -> None:
    """Merge `new` into the cache file through a temporary name (other processes may be adding
    their own shapes); a cache that cannot be written only costs a measurement next time."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        data = _read_cache(path)
        data.setdefault(signature, {}).update(new)
        write_json(path, data)
    except OSError:
        pass


CHOOSER = Chooser()


def measure_model(model: nn.Module, rows: int) -> str:
    """Choose the kernels for every Linear shape of `model` at `rows` rows (batch x frames) before
    training starts, so that the first steps are not slowed by measurements and the choice can be
    printed; returns `CHOOSER.summary()`. Measured once per machine (the cache file), then free."""
    if setting() == "auto" and _ONEDNN_OK:
        shapes = sorted({(m.in_features, m.out_features, m.bias is not None)
                         for m in model.modules() if isinstance(m, Linear)})
        gen = torch.Generator().manual_seed(0)
        for k, n, has_bias in shapes:
            x, w = torch.randn(rows, k, generator=gen), torch.randn(n, k, generator=gen) * k ** -0.5
            g = torch.randn(rows, n, generator=gen)
            b = torch.zeros(n) if has_bias else None
            CHOOSER.choose("forward", rows, k, n, (x, w, b))
            CHOOSER.choose("grad_input", rows, k, n, (g, w))
            CHOOSER.choose("grad_weight", rows, k, n, (g, x))
    return CHOOSER.summary()


# --------------------------------------------------------------------------------------------
# The Linear layer
# --------------------------------------------------------------------------------------------

def _plain_float32_cpu(x: torch.Tensor, w: torch.Tensor) -> bool:
    # tracing, export and compiling first: under torch.export a size may be symbolic, and
    # `numel() > 0` would then be a guard on data
    if (torch.compiler.is_compiling() or torch.jit.is_tracing() or torch.jit.is_scripting()
            or torch.onnx.is_in_onnx_export()):
        return False
    return (x.device.type == "cpu" and x.dtype == torch.float32 and w.dtype == torch.float32
            and not torch.is_autocast_enabled("cpu") and x.numel() > 0)


def _run(product: str, args: tuple, m: int, k: int, n: int) -> torch.Tensor:
    return KERNELS[product][CHOOSER.choose(product, m, k, n, args)](*args)


class _LinearFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, x: torch.Tensor, w: torch.Tensor, b: torch.Tensor | None) -> torch.Tensor:  # noqa: ANN001
        x2 = x.reshape(-1, x.shape[-1])
        if not x2.is_contiguous():
            x2 = x2.contiguous()
        m, k, n = x2.shape[0], x2.shape[1], w.shape[0]
        y = _run("forward", (x2, w, b), m, k, n)
        ctx.save_for_backward(x2, w)
        ctx.has_bias = b is not None
        ctx.x_shape = x.shape
        return y.reshape(*x.shape[:-1], n)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):  # noqa: ANN001, ANN205
        x2, w = ctx.saved_tensors
        g = grad.reshape(-1, grad.shape[-1])
        if not g.is_contiguous():
            g = g.contiguous()
        m, k, n = x2.shape[0], x2.shape[1], w.shape[0]
        gx = gw = gb = None
        if ctx.needs_input_grad[0]:
            gx = _run("grad_input", (g, w), m, k, n).reshape(ctx.x_shape)
        if ctx.needs_input_grad[1]:
            gw = _run("grad_weight", (g, x2), m, k, n)
        if ctx.has_bias and ctx.needs_input_grad[2]:
            gb = g.sum(0)
        return gx, gw, gb


def linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
    """`F.linear`, with plain float32 CPU work on the kernels measured fastest here."""
    if not _plain_float32_cpu(x, weight) or x.shape[-1] != weight.shape[1]:
        return F.linear(x, weight, bias)  # (a width that does not fit: PyTorch's own message, not oneDNN's)
    return _LinearFunction.apply(x, weight, bias)


class Linear(nn.Linear):
    """`nn.Linear` (the same parameters and state dict) computed by `linear()`."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return linear(x, self.weight, self.bias)


__all__ = ["CHOOSER", "Linear", "cache_path", "linear", "measure_model", "setting"]
