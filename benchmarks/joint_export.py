"""Latency of the 2nd place's on-device model per decoding, as Kaggle calls it (one sequence per
call, one thread), at T = 320 and 768 frames, in onnxruntime.

    .venv/bin/python benchmarks/joint_export.py [--checkpoint CKPT ...] [--out DIR] [--repeats N]

Without --checkpoint it imports the 2nd place's fixture network (`../shared/fixtures/second_place`,
the full 6.3M-parameter design with its own weights) through `aslfr import-keras`. Each decoding
is exported with `aslfr export --onnx-only --no-web` (its export time is printed too), then
timed on random landmarks with no frame missing (median of --repeats calls). Prints the CPU's
flags first; compare figures from one run only.
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
    print(f"{len(checkpoints)} model(s); onnxruntime {ort.__version__}, 1 thread; median of {a.repeats} calls")
    print(f"{'decoding':<10} {'export s':>9} {'T=320 ms':>9} {'T=768 ms':>9}  MiB")
    for decoding in a.decodings.split(","):
        out = work / decoding
        args = [sys.executable, "-m", "aslfr", "export", "--out", str(out), "--onnx-only", "--no-web",
                "--decoding", decoding]
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
        print(f"{decoding:<10} {export_s:9.0f} {ms[320]:9.1f} {ms[768]:9.1f}  {size:.1f}", flush=True)


if __name__ == "__main__":
    main()
