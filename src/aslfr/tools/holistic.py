"""MediaPipe Holistic on a video or image -> one sequence in the Kaggle layout.

    python holistic.py INPUT OUT.parquet [--sequence-id N]
    python holistic.py (INPUT | --camera N) --stream [--realtime]

With --stream, MediaPipe runs in its video (tracking) mode and each frame goes to stdout as it
is done, in binary: first the source's frames per second (float64), then per frame its stream
time in seconds (float64), MediaPipe's milliseconds for it (float64) and the 1,629 values
(float32). --realtime paces a file at its own frame rate and, like a camera, drops frames when
MediaPipe falls behind.

Runs in the environment that holds the `video` extra (mediapipe 0.10.21, which bundles the
Holistic models in its wheel, and numpy<2). Writes `sequence_id` (index), `frame`, then the 1,629
landmark columns in Kaggle's names and order; NaN wherever a part is not detected. Imports only
aslfr.landmarks from the project (plain NumPy).
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))
from aslfr.landmarks import LANDMARK_COLUMNS, PARTS  # noqa: E402

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


def frames_of(path: Path):
    import cv2

    if path.suffix.lower() in IMAGE_SUFFIXES:
        image = cv2.imread(str(path))
        if image is None:
            raise Refused(f"{path}: not a readable image")
        yield image
        return
    cap = cv2.VideoCapture(str(path))
    if not cap.isOpened():
        raise Refused(f"{path}: not a readable video")
    try:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            yield frame
    finally:
        cap.release()


class Refused(Exception):
    """An input the extractor cannot read: one line for the user."""


def check_input(path: Path) -> None:
    """Before MediaPipe starts: the input opens as an image or a video and has a frame."""
    import cv2

    if path.suffix.lower() in IMAGE_SUFFIXES:
        if cv2.imread(str(path)) is None:
            raise Refused(f"{path}: not a readable image")
        return
    cap = cv2.VideoCapture(str(path))
    try:
        if not cap.isOpened():
            raise Refused(f"{path}: not a video OpenCV can read (nor an image: "
                          f"{', '.join(sorted(IMAGE_SUFFIXES))})")
        if not cap.read()[0]:
            raise Refused(f"{path}: a video with no frame that can be decoded")
    finally:
        cap.release()


def frame_count(path: Path) -> int | None:
    import cv2

    if path.suffix.lower() in IMAGE_SUFFIXES:
        return 1
    cap = cv2.VideoCapture(str(path))
    n = int(cap.get(cv2.CAP_PROP_FRAME_COUNT))
    cap.release()
    return n if n > 0 else None


def landmarks_row(result) -> np.ndarray:
    """One frame's 1,629 values (x of every part, then y, then z), NaN where a part is missing."""
    row = np.full((3, sum(PARTS.values())), np.nan, np.float32)
    parts = {"face": result.face_landmarks, "left_hand": result.left_hand_landmarks,
             "pose": result.pose_landmarks, "right_hand": result.right_hand_landmarks}
    start = 0
    for name, n in PARTS.items():
        found = parts[name]
        if found is not None:
            pts = np.array([[p.x, p.y, p.z] for p in found.landmark[:n]], np.float32)
            row[:, start:start + len(pts)] = pts.T
        start += n
    return row.reshape(-1)


def run(src: Path, out: Path, sequence_id: int, progress: bool = True) -> int:
    import cv2
    import mediapipe as mp
    import pyarrow as pa
    import pyarrow.parquet as pq
    from tqdm import tqdm

    rows = []
    static = src.suffix.lower() in IMAGE_SUFFIXES
    with mp.solutions.holistic.Holistic(static_image_mode=static, model_complexity=1,
                                        refine_face_landmarks=False) as holistic:
        for frame in tqdm(frames_of(src), total=frame_count(src), desc="landmarks", unit="frame",
                          disable=not progress):
            rows.append(landmarks_row(holistic.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB))))
    values = np.stack(rows) if rows else np.zeros((0, len(LANDMARK_COLUMNS)), np.float32)
    columns = {"sequence_id": pa.array(np.full(len(values), sequence_id, np.int64)),
               "frame": pa.array(np.arange(len(values), dtype=np.int16))}
    for k, name in enumerate(LANDMARK_COLUMNS):
        columns[name] = pa.array(values[:, k])
    table = pa.table(columns)
    # pandas' metadata names every column, as the competition's files do: pd.read_parquet then
    # gives sequence_id as the index (with "columns": [] it cannot rebuild the index and fails)
    import json

    types = {"sequence_id": "int64", "frame": "int16"}
    meta = {"index_columns": ["sequence_id"], "column_indexes": [],
            "columns": [{"name": n, "field_name": n, "pandas_type": types.get(n, "float32"),
                         "numpy_type": types.get(n, "float32"), "metadata": None} for n in columns],
            "creator": {"library": "aslfr"}, "pandas_version": "2.0.0"}
    table = table.replace_schema_metadata({b"pandas": json.dumps(meta).encode()})
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}.partial")
    try:
        pq.write_table(table, tmp)
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()
    return len(values)


def stream(src: Path | None, camera: int | None, realtime: bool) -> None:
    import struct
    import time

    import cv2
    import mediapipe as mp

    cap = cv2.VideoCapture(camera if camera is not None else str(src))
    if not cap.isOpened():
        raise Refused(f"{'camera ' + str(camera) if camera is not None else src}: cannot be opened")
    fps = cap.get(cv2.CAP_PROP_FPS) or 30.0
    fps = fps if 1 <= fps <= 240 else 30.0
    out = sys.stdout.buffer
    out.write(struct.pack("<d", fps))
    out.flush()
    start, index = time.perf_counter(), 0
    pace = realtime and camera is None
    with mp.solutions.holistic.Holistic(static_image_mode=False, model_complexity=1,
                                        refine_face_landmarks=False) as holistic:
        while True:
            ok, frame = cap.read()
            if not ok:
                break
            t = index / fps if camera is None else time.perf_counter() - start
            index += 1
            if pace:
                ahead = start + t - time.perf_counter()
                if ahead > 0:
                    time.sleep(ahead)
                elif -ahead > 1 / fps:  # behind by more than a frame: drop it, as a camera would
                    continue
            t0 = time.perf_counter()
            row = landmarks_row(holistic.process(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB)))
            ms = (time.perf_counter() - t0) * 1e3
            out.write(struct.pack("<dd", t, ms) + row.astype("<f4").tobytes())
            out.flush()
    cap.release()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("input", type=Path, nargs="?")
    ap.add_argument("out", type=Path, nargs="?")
    ap.add_argument("--sequence-id", type=int, default=0)
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--stream", action="store_true")
    ap.add_argument("--camera", type=int)
    ap.add_argument("--realtime", action="store_true")
    a = ap.parse_args()
    try:
        _main(a)
    except Refused as e:  # one line: on stdout, which `aslfr landmarks` always reads (its stderr shows
        # progress), or on stderr with --stream, whose stdout is the frames
        print(f"error: {e}", file=sys.stderr if a.stream else sys.stdout, flush=True)
        sys.exit(2)


def _main(a: argparse.Namespace) -> None:
    if a.camera is None and (a.input is None or not a.input.is_file()):
        raise Refused(f"{a.input}: not found")
    if a.camera is None:
        check_input(a.input)
    if a.stream:
        try:
            stream(a.input, a.camera, a.realtime)
        except BrokenPipeError:  # the reader stopped
            pass
        return
    if a.out is None:
        raise Refused("an output parquet is needed without --stream")
    n = run(a.input, a.out, a.sequence_id, progress=not a.no_progress)
    print(f"{n} frames -> {a.out}")


if __name__ == "__main__":
    main()
