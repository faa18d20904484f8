"""Latency of the on-device model at T=320 with one thread: PyTorch eager, ONNX Runtime and the
TFLite float32 / float16 / int8 (dynamic-range) variants, all measured in one run.

    .venv/bin/python benchmarks/inference.py [--preset seed-final] [--checkpoint CKPT] [--runs 30]

Every runtime runs the whole exported module (preprocessing, network, greedy decoding) on the
same input. Without a checkpoint the preset's network has its initial weights (the latency does
not depend on the values); the TFLite conversion needs the converter environment (`make tools`).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from machine import sgemm_gflops  # noqa: E402

from aslfr.config import preset  # noqa: E402
from aslfr.export import convert_tflite, export_onnx  # noqa: E402
from aslfr.inference import InferenceModule, build  # noqa: E402
from aslfr.model import FingerspellingModel, count_parameters, flops_per_sequence  # noqa: E402


def median_ms(fn, runs: int, warmup: int = 3) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="seed-final")
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--frames", type=int, default=320)
    ap.add_argument("--runs", type=int, default=30)
    a = ap.parse_args()

    torch.set_num_threads(1)
    if a.checkpoint:
        module, cfg = build(a.checkpoint, max_frames=a.frames)
    else:
        cfg = preset(a.preset)
        torch.manual_seed(0)
        module = InferenceModule(FingerspellingModel(cfg), torch.zeros(600), torch.ones(600), a.frames)
    x = np.random.default_rng(0).random((a.frames, 200), dtype=np.float32)
    print(f"{a.preset if not a.checkpoint else a.checkpoint}: {count_parameters(module.model):,} parameters, "
          f"{flops_per_sequence(cfg, a.frames) / 1e9:.2f} GFLOPs per sequence at T={a.frames}; "
          f"one thread, median of {a.runs}")
    rows = []
    with torch.no_grad():
        xt = torch.from_numpy(x)
        rows.append(("PyTorch eager", median_ms(lambda: module(xt), a.runs), None))

    import onnxruntime as ort
    from ai_edge_litert.interpreter import Interpreter

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_onnx(module, tmp / "model.onnx")
        opts = ort.SessionOptions()
        opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1
        sess = ort.InferenceSession(str(tmp / "model.onnx"), opts)
        rows.append(("ONNX Runtime", median_ms(lambda: sess.run(None, {"inputs": x}), a.runs),
                     (tmp / "model.onnx").stat().st_size))
        variants = convert_tflite(tmp / "model.onnx", tmp)
        for name, path in variants.items():
            runner = Interpreter(str(path), num_threads=1).get_signature_runner("serving_default")
            rows.append((f"TFLite {name}", median_ms(lambda: runner(inputs=x), a.runs), path.stat().st_size))
    gflops = sgemm_gflops(a.frames, cfg.dim, 4 * cfg.dim, runs=a.runs)  # T x width x 4 width
    limit = flops_per_sequence(cfg, a.frames) / gflops / 1e6
    print(f"single-thread SGEMM on this machine: {gflops:.0f} GFLOP/s, so the float32 limit of "
          f"{flops_per_sequence(cfg, a.frames) / 1e9:.2f} GFLOPs is {limit:.0f} ms")
    base = rows[0][1]
    print(f"{'runtime':<16} {'median ms':>10} {'vs eager':>9} {'vs limit':>9} {'size MiB':>9}")
    for name, ms, size in rows:
        print(f"{name:<16} {ms:>10.1f} {base / ms:>8.2f}x {ms / limit:>8.2f}x "
              f"{size / 2**20 if size else float('nan'):>9.2f}")


if __name__ == "__main__":
    main()
