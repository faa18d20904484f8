"""Latency of the 2nd place's on-device model per decoding, as Kaggle calls it (one sequence per
call, one thread), at T = 320 and 768 frames, in onnxruntime and in tflite-runtime 2.14.0 (the
runtime Kaggle's evaluator used).

    .venv/bin/python benchmarks/joint_export.py [--checkpoint CKPT ...] [--out DIR] [--repeats N] [--onnx-only]

Without --checkpoint it imports the 2nd place's fixture network (`../shared/fixtures/second_place`,
the full 6.3M-parameter design with its own weights) through `aslfr import-keras`. Each decoding
is exported with `aslfr export --no-web` (its export time, ONNX and TFLite, is printed too), then
timed on random landmarks with no frame missing (median of --repeats calls): model.onnx in
onnxruntime, model_float32.tflite in tflite-runtime with its default XNNPACK delegate
(`tflite_time.py`, in the converter environment). Prints the CPU's flags first; compare figures
from one run only.
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from aslfr.hardware import describe_cpu

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--checkpoint", action="append", type=Path, help="checkpoint(s) of the 2nd place's family")
    ap.add_argument("--out", type=Path, help="folder for the exports (default: a temporary one)")
    ap.add_argument("--repeats", type=int, default=7)
    ap.add_argument("--decodings", default="ctc,attention,joint")
    ap.add_argument("--onnx-only", action="store_true", help="no TFLite: export and time model.onnx only")
    a = ap.parse_args()
    import onnxruntime as ort

    print(describe_cpu(), flush=True)
    work = a.out or Path(tempfile.mkdtemp(prefix="aslfr-joint-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    checkpoints = a.checkpoint
    if not checkpoints:
        h5 = ROOT.parent / "shared" / "fixtures" / "second_place" / "second_place_network.h5"
        checkpoints = [work / "second_place.pt"]
        subprocess.run([sys.executable, "-m", "aslfr", "import-keras", str(h5), "--out", str(checkpoints[0])],
                       check=True, capture_output=True)
    rng = np.random.default_rng(0)
    inputs = {t: rng.random((t, 1629)).astype(np.float32) for t in (320, 768)}
    print(f"{len(checkpoints)} model(s); onnxruntime {ort.__version__} and tflite-runtime 2.14.0, 1 thread; "
          f"median of {a.repeats} calls")
    print(f"{'decoding':<10} {'export s':>9} {'ORT 320':>8} {'ORT 768':>8} {'TFL 320':>8} {'TFL 768':>8}  "
          f"onnx MiB  tflite MiB")
    for decoding in a.decodings.split(","):
        out = work / decoding
        args = [sys.executable, "-m", "aslfr", "export", "--out", str(out), "--no-web", "--decoding", decoding]
        if a.onnx_only:
            args.append("--onnx-only")
        for c in checkpoints:
            args += ["--checkpoint", str(c)]
        t0 = time.perf_counter()
        subprocess.run(args, check=True, capture_output=True)
        export_s = time.perf_counter() - t0
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        session = ort.InferenceSession(str(out / "model.onnx"), opts)
        ms = {}
        for t, x in inputs.items():
            session.run(None, {"inputs": x})
            times = []
            for _ in range(a.repeats):
                t1 = time.perf_counter()
                session.run(None, {"inputs": x})
                times.append((time.perf_counter() - t1) * 1000)
            ms[t] = statistics.median(times)
        size = (out / "model.onnx").stat().st_size / 2**20
        tfl, tfl_size = {320: float("nan"), 768: float("nan")}, float("nan")
        if not a.onnx_only:
            tflite = out / "model_float32.tflite"
            tfl = {t: _tflite_ms(tflite, t, a.repeats) for t in inputs}
            tfl_size = tflite.stat().st_size / 2**20
        print(f"{decoding:<10} {export_s:9.0f} {ms[320]:8.1f} {ms[768]:8.1f} {tfl[320]:8.1f} {tfl[768]:8.1f}  "
              f"{size:8.1f}  {tfl_size:10.1f}", flush=True)


def _tflite_ms(path: Path, frames: int, repeats: int) -> float:
    """The median ms of `path` at `frames` in tflite-runtime 2.14.0 with XNNPACK (tflite_time.py)."""
    import json

    from aslfr.export import converter_python

    script = Path(__file__).parent / "tflite_time.py"
    run = subprocess.run([str(converter_python()), str(script), str(frames), str(repeats), str(path)],
                         capture_output=True, text=True)
    if run.returncode != 0:
        raise SystemExit(f"tflite_time.py failed:\n{run.stderr[-3000:]}")
    timed = json.loads(run.stdout.strip().splitlines()[-1])[str(path)]
    return float("nan") if timed is None else timed["xnnpack"]


if __name__ == "__main__":
    main()
