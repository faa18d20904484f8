"""Fingerspelling recognition with an exported model, for applications.

    from aslfr import Recognizer

    rec = Recognizer("submission.zip")             # or "model.onnx"
    rec.transcribe(frames)                         # [T, 1629] or [T, 200] landmarks -> text
    rec.transcribe("clip.mp4")                     # a video (MediaPipe Holistic), or a Kaggle parquet

    stream = rec.stream()                          # live: frames as they come
    for frame in frames:
        partial = stream.push(frame)               # the current phrase so far
    final = stream.end()                           # the last phrase's text
    stream.phrases                                 # every finished phrase, with its timing

One implementation serves `aslfr transcribe`, `aslfr show` and `aslfr live`.

The stream segments phrases as the seed's data does, by the hands: a phrase opens at a frame
with a hand (any right- or left-hand landmark detected) and ends once `gap_ms` pass without one;
its frames run from its first to its last frame with a hand (shorter dropouts inside are kept),
and its final text is the model's transcription of exactly those frames. While a phrase is open
the model re-decodes it every `every_ms` of stream time (no more often than twice the time an
update takes, so that decoding never takes more than half the time between updates).
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from aslfr.landmarks import LANDMARK_COLUMNS, SELECTED_COLUMNS
from aslfr.messages import first_line
from aslfr.vocab import CHARMAP_KEY, COMPETITION, CharacterMap

#: Re-decoding twice a second: the seed-final export takes about 130 ms an update at its
#: maximum frames on one core of the development machine (benchmarks/live.py), a quarter of a core.
DEFAULT_EVERY_MS = 500
#: A phrase ends after a second without a hand: longer than the detection dropouts inside a phrase.
DEFAULT_GAP_MS = 1000
VIDEO_SUFFIXES = {".mp4", ".avi", ".mov", ".mkv", ".webm", ".gif", ".png", ".jpg", ".jpeg"}


class ExportedModel:
    """A submission.zip (TFLite) or a model.onnx, called the way Kaggle calls it: [T, columns]
    float32 frames in, one row per decoded character out."""

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: model not found")
        if path.suffix == ".zip":
            from aslfr.evaluate import load_runner, read_submission

            model_bytes, self.columns, mapping = read_submission(path)
            self.charmap = CharacterMap.from_mapping(mapping, f"{path}") if mapping else COMPETITION
            runner = load_runner(model_bytes, "litert", self.columns, f"{path}: model.tflite")
            self._run = lambda x: runner(inputs=x)["outputs"]
        elif path.suffix == ".onnx":
            import onnxruntime as ort

            opts = ort.SessionOptions()
            opts.intra_op_num_threads, opts.inter_op_num_threads = 1, 1  # as Kaggle runs it: one thread
            try:
                session = ort.InferenceSession(str(path), opts)
            except Exception as e:  # noqa: BLE001 - onnxruntime raises its own classes
                raise ValueError(f"{path}: not a loadable ONNX model ({first_line(e)})") from None
            shape = session.get_inputs()[0].shape
            # the seed's model reads its 200 columns, the 2nd place's family all 1,629 (Kaggle's order)
            widths = {len(SELECTED_COLUMNS): SELECTED_COLUMNS, len(LANDMARK_COLUMNS): LANDMARK_COLUMNS}
            if session.get_inputs()[0].name != "inputs" or len(shape) != 2 or shape[-1] not in widths:
                raise ValueError(f"{path}: expected an input 'inputs' of [T, {len(SELECTED_COLUMNS)}] or "
                                 f"[T, {len(LANDMARK_COLUMNS)}]; the model has {session.get_inputs()[0].name!r} {shape}")
            self.columns = widths[shape[-1]]
            meta = session.get_modelmeta().custom_metadata_map.get(CHARMAP_KEY)
            try:
                mapping = json.loads(meta) if meta else None
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}: its metadata {CHARMAP_KEY} is not valid JSON ({e})") from None
            self.charmap = (CharacterMap.from_mapping(mapping, f"{path}: its metadata {CHARMAP_KEY}")
                            if mapping is not None else COMPETITION)
            self._run = lambda x: session.run(None, {"inputs": x})[0]
        else:
            raise ValueError(f"{path}: expected a submission .zip or a .onnx model")
        self.path = path

    def __call__(self, frames: np.ndarray) -> str:
        out = self._run(np.ascontiguousarray(frames, dtype=np.float32))
        if out.shape[-1] != self.charmap.n_classes:
            raise ValueError(f"{self.path}: the model gives {out.shape[-1]} classes, its character map "
                             f"{len(self.charmap)} characters and the blank")
        return self.charmap.decode(int(i) for i in np.argmax(out, axis=1))


@dataclass
class Phrase:
    text: str
    start_s: float          # stream time of its first frame with a hand
    end_s: float            # stream time of its last frame with a hand
    frames: int
    final_wall_s: float     # wall-clock seconds from its last hand frame's push to its final text
    by_pause: bool          # ended by `gap_ms` without a hand (else by `end()`)
    decode_ms: float        # the model call that gave its final text


@dataclass
class StreamStats:
    update_ms: list[float] = field(default_factory=list)   # every re-decode, final ones included
    frames: int = 0
    stream_s: float = 0.0                                   # stream time covered

    def summary(self) -> dict:
        ms = self.update_ms
        return {"frames": self.frames, "stream_seconds": self.stream_s, "updates": len(ms),
                "update_ms_median": statistics.median(ms) if ms else None,
                "update_ms_p95": float(np.percentile(ms, 95)) if ms else None,
                "model_share_of_one_core": sum(ms) / 1e3 / self.stream_s if self.stream_s else None}


class Stream:
    """Frames in as they come; partial text out; phrases finished by `gap_ms` without a hand."""

    def __init__(self, recognizer: "Recognizer", every_ms: float = DEFAULT_EVERY_MS,
                 gap_ms: float = DEFAULT_GAP_MS, fps: float = 30.0,
                 on_phrase: Callable[[Phrase], None] | None = None) -> None:
        if every_ms <= 0 or gap_ms <= 0 or fps <= 0:
            raise ValueError(f"every_ms={every_ms}, gap_ms={gap_ms}, fps={fps}: all must be positive")
        self.rec, self.every_s, self.gap_s, self.fps = recognizer, every_ms / 1e3, gap_ms / 1e3, fps
        self.on_phrase = on_phrase
        self.phrases: list[Phrase] = []
        self.stats = StreamStats()
        self._frames: list[np.ndarray] = []   # the open phrase, from its first hand frame
        self._hand_len = 0                    # its frames up to the last with a hand
        self._first_s = self._last_hand_s = 0.0
        self._last_hand_wall = 0.0
        self._next_update_s = 0.0
        self._partial = ""
        self._t = 0.0

    @property
    def open(self) -> bool:
        return bool(self._frames)

    def push(self, frame: np.ndarray, t: float | None = None) -> str:
        """Add one frame ([1629] or [len(columns)] landmarks, NaN where not detected) at stream
        time `t` seconds (default: frames so far / fps); returns the open phrase's text so far
        ("" when no phrase is open)."""
        row = self.rec.select(np.asarray(frame, np.float32)[None])[0]
        self._t = self.stats.frames / self.fps if t is None else float(t)
        self.stats.frames += 1
        self.stats.stream_s = self._t + 1 / self.fps
        hand = bool(np.isfinite(row[self.rec.hand_columns]).any())
        if hand:
            if not self._frames:
                self._first_s, self._next_update_s, self._partial = self._t, self._t, ""
            self._frames.append(row)
            self._hand_len, self._last_hand_s, self._last_hand_wall = len(self._frames), self._t, time.perf_counter()
        elif self._frames:
            self._frames.append(row)
            if self._t - self._last_hand_s >= self.gap_s:
                self._finish(by_pause=True)
                return ""
        if self._frames and self._t >= self._next_update_s:
            self._partial = self._decode()
            cost_s = self.stats.update_ms[-1] / 1e3
            self._next_update_s = self._t + max(self.every_s, 2 * cost_s)
        return self._partial

    def end(self) -> str:
        """Finish the open phrase (if any) and return its text ("" if none was open)."""
        return self._finish(by_pause=False).text if self._frames else ""

    def _decode(self) -> str:
        t0 = time.perf_counter()
        text = self.rec.decode(np.stack(self._frames[:self._hand_len]))
        self.stats.update_ms.append((time.perf_counter() - t0) * 1e3)
        return text

    def _finish(self, by_pause: bool) -> Phrase:
        text = self._decode()
        phrase = Phrase(text, self._first_s, self._last_hand_s, self._hand_len,
                        time.perf_counter() - self._last_hand_wall, by_pause, self.stats.update_ms[-1])
        self.phrases.append(phrase)
        self._frames, self._hand_len, self._partial = [], 0, ""
        if self.on_phrase is not None:
            self.on_phrase(phrase)
        return phrase


class Recognizer:
    """An exported model (submission.zip or model.onnx) with what an application needs around it."""

    def __init__(self, model: str | Path) -> None:
        self.model = ExportedModel(model)
        self.columns = list(self.model.columns)
        self.hand_columns = np.array([i for i, c in enumerate(self.columns)
                                      if c.startswith(("x_right_hand_", "x_left_hand_"))])
        if not len(self.hand_columns):
            raise ValueError(f"{model}: its columns include no hand landmark: phrases cannot be segmented")
        full = {c: i for i, c in enumerate(LANDMARK_COLUMNS)}
        self._from_full = np.array([full[c] for c in self.columns]) if all(c in full for c in self.columns) else None

    def select(self, frames: np.ndarray) -> np.ndarray:
        """[T, 1629] (Kaggle's columns) or [T, len(columns)] -> [T, len(columns)] float32."""
        frames = np.asarray(frames, np.float32)
        if frames.ndim != 2:
            raise ValueError(f"frames of shape {frames.shape}: expected [T, {len(LANDMARK_COLUMNS)}] or "
                             f"[T, {len(self.columns)}]")
        if frames.shape[1] == len(self.columns):
            return frames
        if frames.shape[1] == len(LANDMARK_COLUMNS) and self._from_full is not None:
            return frames[:, self._from_full]
        raise ValueError(f"frames with {frames.shape[1]} values each: expected {len(LANDMARK_COLUMNS)} "
                         f"(every landmark) or {len(self.columns)} (the model's columns)")

    def decode(self, frames: np.ndarray) -> str:
        return self.model(self.select(frames))

    def transcribe(self, source: np.ndarray | str | Path, sequence_id: int | None = None) -> str:
        """The text of one whole sequence: an array of frames, a Kaggle-layout parquet (with
        `sequence_id` when it holds several), a .pose file, or a video."""
        if isinstance(source, np.ndarray):
            return self.decode(source)
        results = self.transcribe_all(source, sequence_id)
        if len(results) != 1:
            raise ValueError(f"{source}: holds {len(results)} sequences; pass sequence_id")
        return results[0]["text"]

    def transcribe_all(self, source: str | Path, sequence_id: int | None = None,
                       progress: bool = False) -> list[dict]:
        """Every sequence of a parquet, a video, or a directory of them: input, sequence_id,
        frames and text each."""
        from aslfr.data.kaggle import DataError
        from aslfr.sources import extract_landmarks, sequences_of

        src = Path(source)
        if src.is_dir():
            files = sorted(p for p in src.rglob("*") if p.suffix in (".parquet", ".pose")
                           or p.suffix.lower() in VIDEO_SUFFIXES)
            if not files:
                raise DataError(f"{src}: no parquet or video files inside")
        elif src.is_file():
            files = [src]
        else:
            raise FileNotFoundError(f"{src}: not found")
        results = []
        with tempfile.TemporaryDirectory(prefix="aslfr-") as tmp:
            for f in files:
                parquet = f
                if f.suffix.lower() in VIDEO_SUFFIXES:
                    parquet = extract_landmarks(f, Path(tmp) / f"{f.stem}.parquet", progress=progress)
                for sid, frames in sequences_of(parquet, self.columns, sequence_id):
                    results.append({"input": str(f), "sequence_id": sid, "frames": len(frames),
                                    "text": self.decode(frames)})
        return results

    def stream(self, every_ms: float = DEFAULT_EVERY_MS, gap_ms: float = DEFAULT_GAP_MS, fps: float = 30.0,
               on_phrase: Callable[[Phrase], None] | None = None) -> Stream:
        return Stream(self, every_ms, gap_ms, fps, on_phrase)


def transcribe(inputs: str | Path, model: str | Path, sequence_id: int | None = None,
               progress: bool = False) -> list[dict]:
    """`aslfr transcribe`: every sequence of a parquet, a video or a directory of them."""
    return Recognizer(model).transcribe_all(inputs, sequence_id, progress=progress)


__all__ = ["DEFAULT_EVERY_MS", "DEFAULT_GAP_MS", "ExportedModel", "Phrase", "Recognizer", "Stream", "transcribe"]
