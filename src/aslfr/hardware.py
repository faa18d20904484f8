"""What the machine has, read once, for the choices that depend on it: the CPU's model and flags
(bf16 autocast where the hardware computes bf16 natively, the matmul kernels' cache key, the
benchmarks' headers) and the cores this process may use (the loader's workers)."""

from __future__ import annotations

import functools
import os
import platform

import torch

#: environment variables that limit the instruction sets PyTorch, oneDNN and MKL use
ISA_LIMITS = ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA", "DNNL_MAX_CPU_ISA", "MKL_ENABLE_INSTRUCTIONS",
              "MKL_DEBUG_CPU_TYPE")
#: the vector and matrix extensions that decide float32, bf16 and int8 speed
SPEED_FLAGS = ("avx2", "fma", "avx512f", "avx512_vnni", "avx512_bf16", "amx_bf16", "amx_int8", "avx_vnni")


@functools.lru_cache(maxsize=1)
def _cpuinfo() -> tuple[str, frozenset[str]]:
    fields: dict[str, str] = {}
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:  # the first core's lines
                key, _, value = line.partition(":")
                fields.setdefault(key.strip(), value.strip())
    except OSError:
        pass
    return (fields.get("model name") or platform.processor() or platform.machine(),
            frozenset(fields.get("flags", "").split()))


def cpu_flags() -> set[str]:
    """The CPU's feature flags (/proc/cpuinfo; empty where it cannot be read)."""
    return set(_cpuinfo()[1])


def cpu_model() -> str:
    return _cpuinfo()[0]


def describe_cpu() -> str:
    """The CPU model and which of `SPEED_FLAGS` it has, in one line (printed beside every speed figure)."""
    flags = cpu_flags()
    limits = [f"{k}={os.environ[k]}" for k in ISA_LIMITS if os.environ.get(k)]
    return (f"{cpu_model()}; " + " ".join(f for f in SPEED_FLAGS if f in flags)
            + " (of " + " ".join(SPEED_FLAGS) + ")" + (f"; limited by {' '.join(limits)}" if limits else ""))


def native_bf16(device: str) -> bool:
    """Whether `device` computes bf16 natively: a GPU that supports it, or a CPU with AVX512_BF16
    or AMX (without them, CPU bf16 is emulated and slower than float32)."""
    if device.startswith("cuda"):
        return torch.cuda.is_available() and torch.cuda.is_bf16_supported()
    flags = cpu_flags()
    return "avx512_bf16" in flags or "amx_bf16" in flags


def bf16_reason(device: str) -> str:
    if device.startswith("cuda"):
        return "the GPU supports bf16" if native_bf16(device) else "the GPU lacks bf16"
    return "the CPU has AVX512_BF16 or AMX" if native_bf16(device) else "the CPU has neither AVX512_BF16 nor AMX"


def bf16_enabled(setting: str, device: str) -> bool:
    """`bf16` = true: autocast to bf16; false: float32; auto: bf16 where the hardware is native."""
    return setting == "true" or (setting == "auto" and native_bf16(device))


def available_cores() -> int:
    """The cores this process may run on (its affinity, e.g. a container's or a job's share)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1
