"""Median latency of TFLite files in tflite-runtime 2.14.0, the runtime Kaggle's evaluator used.

    .tools/onnx2tf/bin/python benchmarks/tflite_time.py FRAMES RUNS MODEL.tflite [MODEL.tflite ...]

Runs in the converter environment, which holds tflite-runtime (it needs numpy<2); imports
nothing from aslfr. Each file is called through its `serving_default` signature with one thread
on random float32 [FRAMES, width] input, as the evaluator calls it, 3 warm-up calls then RUNS
timed ones, once with the runtime's default XNNPACK delegate and once without any delegate;
prints one JSON object: {path: {"xnnpack": ms, "no delegate": ms}}, or {path: null} for a file
this runtime cannot load (the dynamic-range int8 files need a newer FULLY_CONNECTED than 2.14
has). `benchmarks/inference.py --old-runtime`
runs it.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import numpy as np
from tflite_runtime.interpreter import Interpreter, OpResolverType

MODES = {"xnnpack": {}, "no delegate": {"experimental_op_resolver_type": OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES}}


def main(frames: int, runs: int, paths: list[str]) -> None:
    result: dict[str, dict[str, float] | None] = {}
    for path in paths:
        result[path] = {}
        for mode, options in MODES.items():
            try:
                it = Interpreter(path, num_threads=1, **options)
            except ValueError as e:
                print(f"{path}: does not load in tflite-runtime ({str(e).splitlines()[0]})", file=sys.stderr)
                result[path] = None
                break
            runner = it.get_signature_runner("serving_default")
            width = int(it.get_input_details()[0]["shape_signature"][-1])
            x = np.random.default_rng(0).random((frames, width), dtype=np.float32)
            times = []
            for i in range(3 + runs):
                t = time.perf_counter()
                runner(inputs=x)
                if i >= 3:
                    times.append(time.perf_counter() - t)
            result[path][mode] = statistics.median(times) * 1e3
    print(json.dumps(result))


if __name__ == "__main__":
    if len(sys.argv) < 4:
        raise SystemExit(__doc__)
    main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:])
