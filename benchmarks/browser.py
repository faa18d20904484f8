"""The model and MediaPipe in the browser against native, measured side by side in one run.

    .venv/bin/python benchmarks/browser.py [--frames 320] [--runs 20] [--presets seed-final,demo-final]

- one update of each preset's exported model.onnx (random weights: the cost does not depend on
  them) at T = --frames, in onnxruntime-web's wasm backend in headless Chromium (Debian's), with
  1 thread and with every core's thread (the page is cross-origin isolated, as `aslfr serve`
  serves it), against native onnxruntime (the `aslfr` environment's) with the same threads:
  native, then the browser, then native again, each the median of --runs calls after warm-up;
- MediaPipe Holistic JS frames/s in the same headless Chromium, on scikit-image's astronaut
  photograph in tracking mode (a person, face and pose found). Headless Chromium draws WebGL
  in software: a browser on a GPU runs Holistic far faster.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from aslfr import browser
from aslfr.config import preset
from aslfr.export import export_onnx
from aslfr.hardware import describe_cpu
from aslfr.inference import InferenceModule
from aslfr.landmarks import SELECTED_COLUMNS
from aslfr.model import FingerspellingModel
from aslfr.sources import video_python
from aslfr.vocab import COMPETITION
from aslfr.web import model_info, write_site

UPDATE_JS = """async ([rowsB64, t, w, runs]) => {
  await window.aslfrPage.ready;
  const b = Uint8Array.from(atob(rowsB64), (c) => c.charCodeAt(0));
  const all = new Float32Array(b.buffer);
  const rows = Array.from({ length: t }, (_, i) => all.subarray(i * w, (i + 1) * w));
  const r = window.aslfrPage.recognizer;
  for (let i = 0; i < 3; i++) await r.decode(rows);
  const ms = [];
  for (let i = 0; i < runs; i++) { const t0 = performance.now(); await r.decode(rows); ms.push(performance.now() - t0); }
  return { ms, isolated: crossOriginIsolated, cores: navigator.hardwareConcurrency };
}"""

HOLISTIC_JS = """async (frames) => {
  const img = new Image(); img.src = 'photo.png'; await img.decode();
  const p = window.aslfrPage; const ms = [];
  for (let i = 0; i < frames; i++) { const t0 = performance.now(); await p.landmarksOf(img); ms.push(performance.now() - t0); }
  return ms;
}"""


def native_ms(model: Path, x: np.ndarray, threads: int, runs: int) -> float:
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads, opts.inter_op_num_threads = threads, 1
    session = ort.InferenceSession(str(model), opts)
    for _ in range(3):
        session.run(None, {"inputs": x})
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        session.run(None, {"inputs": x})
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def main() -> None:
    import base64

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--frames", type=int, default=320)
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--presets", default="seed-final,demo-final")
    ap.add_argument("--holistic-frames", type=int, default=8)
    a = ap.parse_args()
    why = browser.available()
    if why:
        raise SystemExit(why)
    cores = os.cpu_count() or 1
    print(f"CPU: {describe_cpu()}; {cores} cores")
    version = subprocess.run([str(browser.chromium_path()), "--version"], capture_output=True, text=True).stdout.strip()
    print(f"browser: {version}, headless; onnxruntime-web 1.30.0 (wasm, SIMD build); native: onnxruntime "
          f"{__import__('onnxruntime').__version__}")
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    x = rng.random((a.frames, 200), dtype=np.float32)
    payload = base64.b64encode(x.tobytes()).decode()
    threads = sorted({1, cores})
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in a.presets.split(","):
            cfg = preset(name)
            module = InferenceModule(FingerspellingModel(cfg), torch.zeros(600), torch.ones(600), a.frames)
            export_onnx(module, tmp / f"{name}.onnx")
            site = write_site(tmp / name, tmp / f"{name}.onnx", model_info(SELECTED_COLUMNS, COMPETITION, a.frames))
            before = {n: native_ms(site / "model.onnx", x, n, a.runs) for n in threads}
            web = {}
            with browser.Browser(site, timeout_s=600) as b:
                for n in threads:
                    page = b.open(f"index.html?threads={n}")
                    web[n] = page.evaluate(UPDATE_JS, [payload, a.frames, 200, a.runs])
            after = {n: native_ms(site / "model.onnx", x, n, a.runs) for n in threads}
            print(f"{name} (model.onnx {(site / 'model.onnx').stat().st_size / 2**20:.1f} MiB), one update at "
                  f"T={a.frames}, median of {a.runs}:")
            for n in threads:
                nat = statistics.median([before[n], after[n]])
                w = statistics.median(web[n]["ms"])
                print(f"  {n} thread{'s' if n > 1 else ' '}: browser {w:7.1f} ms   native {nat:7.1f} ms "
                      f"(before {before[n]:.1f}, after {after[n]:.1f})   browser/native {w / nat:.2f}x"
                      + ("" if web[n]["isolated"] or n == 1 else "  [page not cross-origin isolated]"))
        if video_python().is_file():
            photo = subprocess.run([str(video_python()), "-c", "import skimage, os; print(os.path.join("
                                    "os.path.dirname(skimage.__file__), 'data', 'astronaut.png'))"],
                                   check=True, capture_output=True, text=True).stdout.strip()
            site = tmp / a.presets.split(",")[-1]
            shutil.copyfile(photo, site / "photo.png")
            with browser.Browser(site, timeout_s=900) as b:
                page = b.open("index.html")
                ms = page.evaluate(HOLISTIC_JS, a.holistic_frames + 2)[2:]  # after start-up and the first detection
            print(f"MediaPipe Holistic JS (model complexity 1, tracking, 512x512 photo), headless Chromium with "
                  f"software-rendered WebGL: {1e3 / statistics.median(ms):.2f} frames/s "
                  f"({statistics.median(ms):.0f} ms a frame, median of {len(ms)})")


if __name__ == "__main__":
    main()
