"""What this machine's cores can do, measured in the same run as a benchmark's figures."""

from __future__ import annotations

import statistics
import time

import torch


def sgemm_gflops(m: int, k: int, n: int, runs: int = 10, warmup: int = 2) -> float:
    """float32 matmul throughput ([m, k] @ [k, n]) with torch's current thread count: the median
    of `runs` timed calls after `warmup` untimed ones."""
    a, b = torch.randn(m, k), torch.randn(k, n)
    for _ in range(warmup):
        a @ b
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        a @ b
        times.append(time.perf_counter() - t)
    return 2 * m * k * n / statistics.median(times) / 1e9


def cpu_flags() -> str:
    """The CPU model and the vector and matrix extensions that decide float32, bf16 and int8 speed."""
    from aslfr.hardware import describe_cpu

    return describe_cpu()
