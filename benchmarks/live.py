"""What live recognition costs on this machine.

    .venv/bin/python benchmarks/live.py [--preset seed-final] [--frames 320] [--runs 30] [--every-ms 500]

- one update of the exported model at its maximum frames (the open phrase is resized to them,
  so no update costs more), float32 and dynamic-range int8 TFLite, one thread (ai-edge-litert),
  through the same `Recognizer` the live command uses;
- MediaPipe Holistic's own frames per second in its video mode on this machine (the video
  environment), over a clip made of scikit-image's astronaut photograph (a person, face and pose
  found; a signing hand would add the hand models' work);
- the share of one core that the model's updates take at `--every-ms`, and how often an update
  could run at most while taking no more than half the time between updates.
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
import torch


from aslfr.config import preset
from aslfr.export import convert_tflite, converter_python, export_onnx, write_submission
from aslfr.hardware import describe_cpu
from aslfr.inference import InferenceModule
from aslfr.live import Holistic
from aslfr.model import FingerspellingModel
from aslfr.recognizer import Recognizer
from aslfr.sources import video_python

CLIP = """
import os, sys, cv2, numpy as np, skimage
img = cv2.imread(os.path.join(os.path.dirname(skimage.__file__), 'data', 'astronaut.png'))
out = cv2.VideoWriter(sys.argv[1], cv2.VideoWriter_fourcc(*'mp4v'), 30, (img.shape[1], img.shape[0]))
for i in range(int(sys.argv[2])):
    out.write(np.roll(img, int(8 * np.sin(i / 5)), axis=1))  # a little motion, as a person moves
out.release()
"""


def update_ms(rec: Recognizer, frames: np.ndarray, runs: int) -> float:
    rec.decode(frames)  # warm-up
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        rec.decode(frames)
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="seed-final")
    ap.add_argument("--frames", type=int, default=320, help="the export's maximum frames")
    ap.add_argument("--runs", type=int, default=30)
    ap.add_argument("--every-ms", type=float, default=500)
    ap.add_argument("--clip-frames", type=int, default=150)
    a = ap.parse_args()
    print(f"CPU: {describe_cpu()}")
    if not converter_python().is_file():
        sys.exit("needs the converter environment: make tools")
    torch.set_num_threads(1)
    torch.manual_seed(0)
    cfg = preset(a.preset)
    module = InferenceModule(FingerspellingModel(cfg), torch.zeros(600), torch.ones(600), a.frames)
    x = np.random.default_rng(0).random((a.frames, 200), dtype=np.float32)
    x[:, :42] = np.random.default_rng(1).random((a.frames, 42), dtype=np.float32)  # hands present
    costs = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        export_onnx(module, tmp / "model.onnx")
        variants = convert_tflite(tmp / "model.onnx", tmp)
        for name in ("float32", "int8"):
            (tmp / name).mkdir()
            (tmp / name / "model.tflite").write_bytes(variants[name].read_bytes())
            rec = Recognizer(write_submission(tmp / name / "model.tflite", tmp / name))
            costs[name] = update_ms(rec, x, a.runs)
        mp_fps = None
        if video_python().is_file():
            clip = tmp / "astronaut.mp4"
            subprocess.run([str(video_python()), "-c", CLIP, str(clip), str(a.clip_frames)], check=True)
            per_frame = [ms for _, _, ms in Holistic(clip, None, realtime=False)][5:]  # after tracking starts
            mp_fps = 1e3 / statistics.median(per_frame)
    print(f"{a.preset} export at T={a.frames} frames, one thread, median of {a.runs} updates:")
    for name, ms in costs.items():
        print(f"  TFLite {name}: {ms:.1f} ms per update; at one update every {a.every_ms:.0f} ms: "
              f"{100 * ms / a.every_ms:.1f}% of one core; updates can run every {2 * ms:.0f} ms or slower "
              f"(an update at most half the time between them)")
    if mp_fps is not None:
        print(f"MediaPipe Holistic (video mode, model_complexity 1): {mp_fps:.1f} frames/s "
              f"({1e3 / mp_fps:.1f} ms per frame, median of {a.clip_frames - 5}); "
              f"at 30 frames/s a camera needs {100 * 30 / mp_fps:.0f}% of one core for landmarks")
    else:
        print("MediaPipe Holistic: video environment missing (make video)")


if __name__ == "__main__":
    main()
