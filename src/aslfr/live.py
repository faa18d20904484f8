"""`aslfr live`: a camera, a video or recorded landmarks in, text out as the hand moves.

Frames come from MediaPipe Holistic in its video (tracking) mode, run frame by frame in the video
environment (`tools/holistic.py --stream`, the same code as `aslfr landmarks`), or from a
Kaggle-layout parquet of landmarks. They go into a `Recognizer.stream()`, which re-decodes the
open phrase every `--every-ms` and ends it after `--gap-ms` without a hand. The growing text is
shown in place on a terminal (one line per change elsewhere), one final line per phrase, and at
the end what it cost: landmark frames per second, model milliseconds per update, the latency
from a phrase's last hand frame to its final text, and the real-time factor.
"""

from __future__ import annotations

import math
import os
import statistics
import struct
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator, TextIO

import numpy as np

from aslfr.landmarks import LANDMARK_COLUMNS
from aslfr.recognizer import DEFAULT_EVERY_MS, DEFAULT_GAP_MS, VIDEO_SUFFIXES, Phrase, Recognizer

_RECORD = struct.calcsize("<dd") + 4 * len(LANDMARK_COLUMNS)


class FrameSource:
    """(stream time s, frame, MediaPipe ms or None) in order; `fps` known before the first."""

    fps: float = 30.0

    def __iter__(self) -> Iterator[tuple[float, np.ndarray, float | None]]:
        raise NotImplementedError


class LandmarkFile(FrameSource):
    """Sequences of a Kaggle-layout parquet, one after another, with `gap_s` of frames without
    anyone between them (a pause between phrases); `realtime` paces them at `fps`."""

    def __init__(self, path: Path, rec: Recognizer, sequence_id: int | None, fps: float, gap_s: float,
                 realtime: bool, limit: int | None = None) -> None:
        from itertools import islice

        from aslfr.sources import sequences_of

        self.sequences = [frames for _, frames in islice(sequences_of(path, rec.columns, sequence_id), limit)]
        self.width = len(rec.columns)
        self.fps, self.gap, self.realtime = fps, int(np.ceil(gap_s * fps)) + 1, realtime

    def __iter__(self):
        pause = np.full((self.gap, self.width), np.nan, np.float32)
        frames = np.concatenate([part for seq in self.sequences for part in (seq, pause)][:-1] or
                                [np.zeros((0, self.width), np.float32)])
        start = time.perf_counter()
        for i, frame in enumerate(frames):
            t = i / self.fps
            if self.realtime:
                ahead = start + t - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
            yield t, frame, None


class Holistic(FrameSource):
    """MediaPipe Holistic over a video file or a camera, in the video environment."""

    def __init__(self, video: Path | None, camera: int | None, realtime: bool) -> None:
        from aslfr.sources import INSTALL_HINT, MissingExtra, video_python

        python = video_python()
        if not python.is_file():
            raise MissingExtra(INSTALL_HINT)
        script = Path(__file__).parent / "tools" / "holistic.py"
        cmd = [str(python), str(script)] + ([str(video)] if video else ["--camera", str(camera)]) + ["--stream"]
        if realtime:
            cmd.append("--realtime")
        self.what = str(video) if video else f"camera {camera}"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     env=dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2"))
        header = self.proc.stdout.read(8)
        if len(header) < 8:
            self._fail()
        self.fps = struct.unpack("<d", header)[0]

    def _fail(self) -> None:
        from aslfr.data.kaggle import DataError

        self.proc.wait()
        said = [x for x in self.proc.stderr.read().decode(errors="replace").splitlines() if x.strip()]
        if any("No module named 'mediapipe'" in x for x in said):
            from aslfr.sources import INSTALL_HINT, MissingExtra
            raise MissingExtra(INSTALL_HINT)
        if said and said[-1].startswith("error: "):  # the extractor's own one-line refusal
            raise DataError(said[-1][len("error: "):].strip())
        raise DataError(f"{self.what}: landmark extraction failed: "
                        f"{said[-1].strip() if said else f'exit status {self.proc.returncode}'}")

    def __iter__(self):
        try:
            while True:
                record = self.proc.stdout.read(_RECORD)
                if len(record) < _RECORD:
                    break
                t, ms = struct.unpack_from("<dd", record)
                yield t, np.frombuffer(record, "<f4", offset=16).astype(np.float32), ms
        finally:
            if self.proc.poll() is None:
                self.proc.terminate()
            self.proc.wait()
        if self.proc.returncode not in (0, -15):
            self._fail()


class Display:
    """The open phrase's text in place on a terminal; elsewhere one line per change."""

    def __init__(self, out: TextIO) -> None:
        self.out, self.tty, self.shown = out, out.isatty(), ""

    def partial(self, text: str) -> None:
        if text == self.shown:
            return
        self.shown = text
        if self.tty:
            self.out.write(f"\r\x1b[K… {text}")
        elif text:
            self.out.write(f"  … {text}\n")
        self.out.flush()

    def final(self, phrase: Phrase) -> None:
        self.shown = ""
        self.out.write(("\r\x1b[K" if self.tty else "") +
                       f"{phrase.text}\t[{phrase.start_s:.1f}-{phrase.end_s:.1f} s, {phrase.frames} frames]\n")
        self.out.flush()


def live(model: str | Path, source: str | Path | None = None, camera: int | None = None,
         sequence_id: int | None = None, every_ms: float = DEFAULT_EVERY_MS, gap_ms: float = DEFAULT_GAP_MS,
         realtime: bool = False, fps: float = 30.0, out: TextIO = sys.stdout, limit: int | None = None) -> dict:
    """Run the live recogniser over a source; returns the phrases and the figures."""
    if limit is not None and limit < 1:
        raise ValueError(f"--limit {limit}: expected at least 1 sequence")
    for name, value in (("every-ms", every_ms), ("gap-ms", gap_ms), ("fps", fps)):
        if not (math.isfinite(value) and value > 0):
            raise ValueError(f"--{name} {value}: expected a positive number")
    if camera is not None and camera < 0:
        raise ValueError(f"--camera {camera}: expected a camera number >= 0")
    rec = Recognizer(model)
    if (source is None) == (camera is None):
        raise ValueError("give either an input (a video or a landmark parquet) or --camera N")
    if source is not None:
        source = Path(source)
        if not source.is_file():
            raise FileNotFoundError(f"{source}: not found")
    if source is not None and source.suffix in (".parquet", ".pose"):
        frames: FrameSource = LandmarkFile(source, rec, sequence_id, fps, gap_ms / 1e3, realtime, limit)
    elif source is None or source.suffix.lower() in VIDEO_SUFFIXES:
        frames = Holistic(source, camera, realtime)
    else:
        raise ValueError(f"{source}: expected a video ({', '.join(sorted(VIDEO_SUFFIXES))}), a .parquet or a .pose")
    display = Display(out)
    stream = rec.stream(every_ms, gap_ms, frames.fps, on_phrase=display.final)
    mp_ms: list[float] = []
    wall0 = time.perf_counter()
    for t, frame, ms in frames:
        if ms is not None:
            mp_ms.append(ms)
        display.partial(stream.push(frame, t))
    stream.end()
    wall = time.perf_counter() - wall0
    figures = stream.stats.summary()
    figures.update({
        "wall_seconds": wall,
        "real_time_factor": wall / figures["stream_seconds"] if figures["stream_seconds"] else None,
        "landmark_fps": 1e3 / statistics.mean(mp_ms) if mp_ms else None,
        # phrases ended by a pause; one ended by the end of the input has no pause to wait for
        "final_latency_ms_median": statistics.median(p.final_wall_s * 1e3 for p in stream.phrases if p.by_pause)
        if any(p.by_pause for p in stream.phrases) else None,
        "final_decode_ms_median": statistics.median(p.decode_ms for p in stream.phrases) if stream.phrases else None,
        "every_ms": every_ms, "gap_ms": gap_ms, "fps": frames.fps, "realtime": realtime})
    return {"phrases": [p.__dict__ for p in stream.phrases], "figures": figures}


def format_figures(f: dict) -> str:
    def ms(x: float | None) -> str:
        return "n/a" if x is None else f"{x:.1f} ms"

    lines = [f"{f['frames']} frames ({f['stream_seconds']:.1f} s at {f['fps']:.0f} fps) in {f['wall_seconds']:.1f} s: "
             f"real-time factor {f['real_time_factor']:.2f}" + (" (paced)" if f["realtime"] else " (as fast as it goes)"),
             "landmarks: " + (f"MediaPipe Holistic {f['landmark_fps']:.1f} frames/s" if f["landmark_fps"]
                              else "read from a file"),
             f"model: {f['updates']} updates (every {f['every_ms']:.0f} ms of stream time), median "
             f"{ms(f['update_ms_median'])}, p95 {ms(f['update_ms_p95'])}"
             + (f"; {100 * f['model_share_of_one_core']:.1f}% of one core" if f["model_share_of_one_core"] else ""),
             f"final text: {ms(f['final_latency_ms_median'])} after a phrase's last hand frame (median of the "
             f"phrases ended by a pause of {f['gap_ms']:.0f} ms of stream time); the final decode took "
             f"{ms(f['final_decode_ms_median'])}"]
    return "\n".join(lines)


__all__ = ["live", "format_figures"]
