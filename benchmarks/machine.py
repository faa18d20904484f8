"""What this machine's cores can do, measured in the same run as a benchmark's figures."""

from __future__ import annotations

import statistics
import time

import torch


def alternating(fns: dict, runs: int = 15) -> dict[str, float]:  # noqa: ANN001
    """Median seconds of each of `fns`, timed in turn call by call (so that a change in the shared
    machine's speed hits all of them alike), after 2 untimed rounds."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for r in range(runs + 2):
        for k, fn in fns.items():
            t = time.perf_counter()
            fn()
            if r >= 2:
                times[k].append(time.perf_counter() - t)
    return {k: statistics.median(v) for k, v in times.items()}


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
