"""Where landmarks come from: MediaPipe Holistic over a video (or image) -> one Kaggle-layout
sequence, run in the environment that holds the `video` extra (mediapipe 0.10.21 needs numpy<2,
so it lives apart from the main environment: `make video` creates `.tools/video`;
`ASLFR_VIDEO_PYTHON` names another); and the sequences of a Kaggle-layout parquet, a .pose file
or a video, as rows of the columns asked for. The recogniser, `landmarks`, `show` and `live`
read their inputs through here.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


from aslfr.data.kaggle import DataError, read_landmarks, split_sequences
from aslfr.files import check_output_file
from aslfr.landmarks import LANDMARK_COLUMNS

INSTALL_HINT = ("MediaPipe is not installed: run 'make video' (an environment with the 'video' extra: "
                "mediapipe==0.10.21, numpy<2) or set ASLFR_VIDEO_PYTHON to a Python that has it")


class MissingExtra(RuntimeError):
    pass


def video_python() -> Path:
    from aslfr.export import tool_python

    if "ASLFR_VIDEO_PYTHON" not in os.environ:
        try:  # the current environment has the extra
            import mediapipe  # noqa: F401
            return Path(sys.executable)
        except ImportError:
            pass
    return tool_python("ASLFR_VIDEO_PYTHON", "video")


def extract_landmarks(video: str | Path, out: str | Path, sequence_id: int = 0, progress: bool = True) -> Path:
    """MediaPipe Holistic over a video into a Kaggle-layout parquet, or a `.pose` file when `out`
    ends with .pose."""
    video, out = Path(video), Path(out)
    if not video.is_file():
        raise FileNotFoundError(f"{video}: not found")
    if out.suffix not in (".parquet", ".pose"):
        raise ValueError(f"{out}: expected a .parquet or .pose output")
    check_output_file(out)  # before MediaPipe runs over the whole video
    if out.suffix == ".pose":
        import tempfile

        from aslfr.posefile import write_pose

        with tempfile.TemporaryDirectory(prefix="aslfr-") as tmp:
            _, _, rows = read_landmarks(extract_landmarks(video, Path(tmp) / "x.parquet", sequence_id, progress),
                                        LANDMARK_COLUMNS)
        return write_pose(out, rows, fps=video_fps(video))
    python = video_python()
    if not python.is_file():
        raise MissingExtra(INSTALL_HINT)
    script = Path(__file__).parent / "tools" / "holistic.py"
    cmd = [str(python), str(script), str(video), str(out), "--sequence-id", str(sequence_id)]
    if not progress:
        cmd.append("--no-progress")
    # the extractor's progress goes to stderr (shown, or kept when quiet); its one-line reason for
    # refusing an input, to stdout, which is always read
    run = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=None if progress else subprocess.PIPE, text=True,
                         env=dict(os.environ, GLOG_minloglevel="2", TF_CPP_MIN_LOG_LEVEL="2"))
    if run.returncode != 0:
        if "No module named 'mediapipe'" in (run.stderr or ""):
            raise MissingExtra(INSTALL_HINT)
        refused = [line[len("error: "):] for line in (run.stdout or "").splitlines() if line.startswith("error: ")]
        if refused:
            raise DataError(refused[-1])
        said = [line for line in (run.stderr or "").splitlines() if line.strip()]
        reason = said[-1].strip()[-300:] if said else f"MediaPipe's extractor stopped with status {run.returncode}"
        raise DataError(f"{video}: landmark extraction failed: {reason}")
    return out


def video_fps(video: Path) -> float:
    """The frame rate a video declares (30 for an image or where it declares none)."""
    try:
        import imageio.v3 as iio

        fps = float(iio.immeta(video).get("fps") or 30.0)
    except Exception:  # noqa: BLE001 - a rate is a nicety: 30 where it cannot be read
        fps = 30.0
    return fps if 1 <= fps <= 240 else 30.0


def sequences_of(path: Path, columns: list[str], sequence_id: int | None = None):
    """(sequence_id, [T, len(columns)] frames) of a Kaggle-layout parquet or a .pose file (one
    sequence, id 0)."""
    if path.suffix == ".pose":
        from aslfr.posefile import read_pose

        rows, _ = read_pose(path)
        where = {c: i for i, c in enumerate(LANDMARK_COLUMNS)}
        yield 0, rows[:, [where[c] for c in columns]]
        return
    yield from parquet_sequences(path, columns, sequence_id)


# --------------------------------------------------------------------------------------------
# Models
# --------------------------------------------------------------------------------------------

def parquet_sequences(path: Path, columns: list[str], sequence_id: int | None = None):
    ids, _, values = read_landmarks(path, columns)
    blocks = split_sequences(ids)
    found = False
    for sid in sorted(blocks):
        if sequence_id is None or sid == sequence_id:
            found = True
            a, n = blocks[sid]
            yield sid, values[a:a + n]
    if sequence_id is not None and not found:
        raise DataError(f"{path}: no sequence_id {sequence_id}")


__all__ = ["INSTALL_HINT", "MissingExtra", "extract_landmarks", "parquet_sequences", "sequences_of", "video_fps",
           "video_python"]
