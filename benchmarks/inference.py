"""Latency of the on-device model at T=320 with one thread: PyTorch eager, ONNX Runtime and the
TFLite float32 / float16 / int8 (dynamic-range) variants, all measured in one run.

    .venv/bin/python benchmarks/inference.py [--preset seed-final] [--checkpoint CKPT] [--runs 30]
    .venv/bin/python benchmarks/inference.py --keras    # also the network alone, and a Keras build
    .venv/bin/python benchmarks/inference.py --old-runtime  # the TFLite files in tflite-runtime 2.14 too

Every runtime runs the whole exported module (preprocessing, network, greedy decoding) on the
same input. Without a checkpoint the preset's network has its initial weights (the latency does
not depend on the values); the TFLite conversion needs the converter environment (`make tools`).

With --keras the same run also times, on [T, 600] features, the network alone through the
project's export route (torch -> ONNX -> onnx2tf -> TFLite) and the same network built directly in
TensorFlow/Keras and converted straight to TFLite (`keras_reference.py`, run in the converter
environment): the reference build of the project's speed goals, measured on this machine.
With --old-runtime every TFLite file is also timed in tflite-runtime 2.14.0, the runtime Kaggle's
evaluator used (`tflite_time.py`, in the converter environment).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from machine import sgemm_gflops  # noqa: E402

from aslfr.config import preset  # noqa: E402
from aslfr.export import convert_tflite, converter_python, export_onnx  # noqa: E402
from aslfr.features import N_FEATURES  # noqa: E402
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


class NetworkAlone(torch.nn.Module):
    """[T, 600] features -> [T, 60] logits: the network without preprocessing or decoding."""

    def __init__(self, model: torch.nn.Module) -> None:
        super().__init__()
        self.model = model.eval()

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        return self.model(inputs[None])[0]


def tflite_ms(path: Path, x: np.ndarray, runs: int) -> float:
    from ai_edge_litert.interpreter import Interpreter

    runner = Interpreter(str(path), num_threads=1).get_signature_runner("serving_default")
    return median_ms(lambda: runner(inputs=x), runs)


def old_runtime_ms(path: Path, frames: int, runs: int) -> dict[str, float] | None:
    """Median ms of one call in tflite-runtime 2.14.0 with its default XNNPACK delegate and with
    none, run by `tflite_time.py` in the converter environment (random input of the same shape
    as the other runtimes get); None where the file does not load there."""
    script = Path(__file__).parent / "tflite_time.py"
    run = subprocess.run([str(converter_python()), str(script), str(frames), str(runs), str(path)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"tflite_time.py failed:\n{run.stderr[-3000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])[str(path)]


def keras_reference(out: Path, cfg) -> dict[str, Path]:  # noqa: ANN001 - a Config
    """The Keras build of `cfg`'s network, converted to TFLite in the converter environment."""
    script = Path(__file__).parent / "keras_reference.py"
    shape = ["--stages", str(cfg.stages), "--dim", str(cfg.dim), "--heads", str(cfg.heads),
             "--expand", str(cfg.expand), "--kernels", *map(str, cfg.kernel_sizes)]
    run = subprocess.run([str(converter_python()), str(script), str(out), *shape],
                         capture_output=True, text=True,
                         env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES=""))
    if run.returncode != 0:
        raise SystemExit(f"keras_reference.py failed:\n{run.stderr[-3000:]}")
    print(run.stdout.splitlines()[0])
    return {v: out / f"keras_{v}.tflite" for v in ("float32", "float16", "int8")}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="seed-final")
    ap.add_argument("--checkpoint", type=Path)
    ap.add_argument("--frames", type=int, default=320)
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--keras", action="store_true",
                    help="also time the network alone and a TensorFlow/Keras build of it")
    ap.add_argument("--old-runtime", action="store_true",
                    help="also time the TFLite files in tflite-runtime 2.14.0 (converter environment)")
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
    tflite_rows: list[tuple[str, Path]] = []  # for --old-runtime
    with torch.no_grad():
        xt = torch.from_numpy(x)
        rows.append(("PyTorch eager", median_ms(lambda: module(xt), a.runs), None))

    import onnxruntime as ort

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
            rows.append((f"TFLite {name}", tflite_ms(path, x, a.runs), path.stat().st_size))
            tflite_rows.append((f"TFLite {name}", path))
        if a.keras:
            feats = np.random.default_rng(1).standard_normal((a.frames, N_FEATURES), dtype=np.float32)
            (tmp / "net").mkdir()
            export_onnx(NetworkAlone(module.model), tmp / "net" / "model.onnx", width=N_FEATURES)
            ours = convert_tflite(tmp / "net" / "model.onnx", tmp / "net")
            theirs = keras_reference(tmp / "keras", cfg)
            for name in ours:
                for label, path in (("net, ours", ours[name]), ("net, Keras", theirs[name])):
                    rows.append((f"{label} {name}", tflite_ms(path, feats, a.runs), path.stat().st_size))
                    tflite_rows.append((f"{label} {name}", path))
        if a.old_runtime:
            for label, path in tflite_rows:
                old = old_runtime_ms(path, a.frames, a.runs) or {"xnnpack": None, "no delegate": None}
                rows.append((f"{label} [2.14]", old["xnnpack"], path.stat().st_size))
                rows.append((f"{label} [2.14, no delegate]", old["no delegate"], path.stat().st_size))
    gflops = sgemm_gflops(a.frames, cfg.dim, 4 * cfg.dim, runs=a.runs)  # T x width x 4 width
    limit = flops_per_sequence(cfg, a.frames) / gflops / 1e6
    print(f"single-thread SGEMM on this machine: {gflops:.0f} GFLOP/s, so the float32 limit of "
          f"{flops_per_sequence(cfg, a.frames) / 1e9:.2f} GFLOPs is {limit:.0f} ms")
    base = rows[0][1]
    print(f"{'runtime':<40} {'median ms':>10} {'vs eager':>9} {'vs limit':>9} {'size MiB':>9}")
    for name, ms, size in rows:
        if ms is None:
            print(f"{name:<40} {'does not load':>30}")
            continue
        print(f"{name:<40} {ms:>10.1f} {base / ms:>8.2f}x {ms / limit:>8.2f}x "
              f"{size / 2**20 if size else float('nan'):>9.2f}")


if __name__ == "__main__":
    main()
