"""Video in (MediaPipe Holistic), text out (exported models), pictures of the data."""

import json
import subprocess
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from aslfr.cli import main
from aslfr.export import export
from aslfr.landmarks import LANDMARK_COLUMNS
from aslfr.recognizer import ExportedModel
from aslfr.recognizer import transcribe
from aslfr.sources import parquet_sequences, video_python

needs_video = pytest.mark.skipif(not video_python().is_file(), reason="video extra missing: run 'make video'")


def _in_video_env(code: str) -> str:
    return subprocess.run([str(video_python()), "-c", code], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture(scope="module")
def shipped_photo() -> Path:
    """scikit-image's astronaut photograph (Eileen Collins): a real person, shipped in the wheel."""
    return Path(_in_video_env("import skimage, os; print(os.path.join(os.path.dirname(skimage.__file__), "
                              "'data', 'astronaut.png'))"))


def _check_layout(path: Path) -> dict:
    table = pq.read_table(path)
    assert table.column_names == ["sequence_id", "frame", *LANDMARK_COLUMNS]
    return {name: table.column(name).to_numpy(zero_copy_only=False) for name in table.column_names}


@needs_video
def test_landmarks_finds_a_person_in_a_shipped_photo(shipped_photo: Path, tmp_path: Path) -> None:
    out = tmp_path / "astronaut.parquet"
    assert main(["landmarks", str(shipped_photo), "--out", str(out), "--sequence-id", "7"]) == 0
    cols = _check_layout(out)
    assert cols["sequence_id"].tolist() == [7] and cols["frame"].tolist() == [0]
    # pandas' metadata names every column (pd.read_parquet rebuilds sequence_id as the index from it)
    meta = pq.read_schema(out).pandas_metadata
    assert meta["index_columns"] == ["sequence_id"]
    assert [c["name"] for c in meta["columns"]] == ["sequence_id", "frame", *LANDMARK_COLUMNS]
    face = np.array([cols[c][0] for c in LANDMARK_COLUMNS if "_face_" in c])
    pose = np.array([cols[c][0] for c in LANDMARK_COLUMNS if "_pose_" in c])
    assert np.isfinite(face).all() or np.isfinite(pose).all()
    assert ((face[:468] > 0) & (face[:468] < 1)).mean() > 0.9  # x in the image's [0, 1]


@needs_video
def test_landmarks_of_a_video_without_a_person_are_all_nan(tmp_path: Path) -> None:
    video = tmp_path / "empty.avi"
    _in_video_env(f"""
import cv2, numpy as np
w = cv2.VideoWriter({str(video)!r}, cv2.VideoWriter_fourcc(*'MJPG'), 10, (160, 120))
for t in range(12):
    frame = np.zeros((120, 160, 3), np.uint8); frame[:, :, 1] = np.linspace(0, 255, 160)[None] * (t + 1) / 12
    w.write(frame)
w.release()""")
    out = tmp_path / "empty.parquet"
    assert main(["landmarks", str(video), "--out", str(out)]) == 0
    cols = _check_layout(out)
    assert cols["frame"].tolist() == list(range(12))
    assert all(np.isnan(cols[c]).all() for c in LANDMARK_COLUMNS)


def test_missing_video_extra_is_one_line(tmp_path: Path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("ASLFR_VIDEO_PYTHON", str(tmp_path / "no-python"))
    (tmp_path / "v.mp4").write_bytes(b"")
    assert main(["landmarks", str(tmp_path / "v.mp4"), "--out", str(tmp_path / "o.parquet")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "make video" in err and "mediapipe==0.10.21" in err


@pytest.fixture(scope="module")
def onnx_model(trained_run: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("onnx_only")
    export(trained_run / "checkpoints" / "last.pt", out, tflite=False, log=lambda *_: None)
    return out / "model.onnx"


def test_transcribe_parquet_and_directory(onnx_model: Path, synth_dir: Path, capsys) -> None:
    files = sorted((synth_dir / "train_landmarks").glob("*.parquet"))
    model = ExportedModel(onnx_model)
    expected = {sid: model(frames) for sid, frames in parquet_sequences(files[0], model.columns)}
    assert main(["transcribe", str(files[0]), "--model", str(onnx_model)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert {int(a): b for a, b in (ln.split("\t") if "\t" in ln else (ln, "") for ln in lines)} == expected
    sid = next(iter(expected))
    assert main(["transcribe", str(files[0]), "--model", str(onnx_model), "--sequence-id", str(sid), "--json"]) == 0
    (only,) = json.loads(capsys.readouterr().out)
    assert only["sequence_id"] == sid and only["text"] == expected[sid]
    everything = transcribe(synth_dir / "train_landmarks", onnx_model)
    assert len(everything) == 80
    assert main(["transcribe", str(files[0]), "--model", str(onnx_model), "--sequence-id", "1"]) == 2


@needs_video
def test_transcribe_a_video(onnx_model: Path, shipped_photo: Path) -> None:
    (r,) = transcribe(shipped_photo, onnx_model)
    assert r["frames"] == 1 and isinstance(r["text"], str)


def test_show_draws_hands_and_the_growing_prediction(onnx_model: Path, synth_dir: Path, tmp_path: Path, capsys) -> None:
    import imageio.v3 as iio

    sid = int((synth_dir / "train.csv").read_text().splitlines()[1].split(",")[2])
    out = tmp_path / "clip.gif"
    assert main(["show", "--data", str(synth_dir), "--sequence-id", str(sid), "--out", str(out),
                 "--model", str(onnx_model), "--every", "4"]) == 0
    assert "prediction" in capsys.readouterr().out
    frames = iio.imread(out, index=None)
    assert frames.ndim == 4 and len(frames) >= 5
    r, g, b = (frames[..., c].astype(int) for c in range(3))
    orange = (r > 200) & (g > 90) & (g < 150) & (b < 90)   # right hand, #ee7733
    blue = (r < 60) & (g > 90) & (g < 150) & (b > 150)     # left hand, #0077bb
    assert (orange | blue).any(axis=(1, 2)).mean() > 0.5   # a hand is drawn in most frames
    assert main(["show", "--data", str(synth_dir), "--sequence-id", "1", "--out", str(out)]) == 2


@needs_video
@pytest.mark.parametrize("command", ["landmarks", "transcribe", "live"])
def test_a_file_that_is_not_a_video_says_so(onnx_model: Path, tmp_path: Path, capsys, command: str) -> None:
    """With progress shown (the extractor's stderr is the terminal's), the reason still reaches
    the one line, naming the file; nothing is written."""
    junk = tmp_path / "clip.mp4"
    junk.write_bytes(b"not a video at all")
    argv = {"landmarks": ["landmarks", str(junk), "--out", str(tmp_path / "out.parquet")],
            "transcribe": ["transcribe", str(junk), "--model", str(onnx_model)],
            "live": ["live", str(junk), "--model", str(onnx_model)]}[command]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err[-1] == f"aslfr {command}: error: {junk}: not a video OpenCV can read (nor an image: " \
                      f".bmp, .jpeg, .jpg, .png, .webp)", err
    assert not list(tmp_path.glob("*out*"))


def test_landmarks_checks_its_output_before_mediapipe_runs(shipped_photo: Path, tmp_path: Path, capsys) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    (tmp_path / "d.parquet").mkdir()
    for out, says in [(blocker / "x.parquet", "cannot create its folder"), (tmp_path / "d.parquet", "is a directory"),
                      (tmp_path / "x.csv", "expected a .parquet or .pose output")]:
        assert main(["landmarks", str(shipped_photo), "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and str(out) in err and says in err, err


@needs_video
def test_landmarks_of_a_photo_to_a_pose_file(shipped_photo: Path, tmp_path: Path) -> None:
    from aslfr.posefile import read_pose
    from aslfr.sources import extract_landmarks

    path = extract_landmarks(shipped_photo, tmp_path / "astronaut.pose", progress=False)
    rows, fps = read_pose(path)
    face = [i for i, c in enumerate(LANDMARK_COLUMNS) if c.startswith("x_face_")]
    assert rows.shape == (1, len(LANDMARK_COLUMNS)) and np.isfinite(rows[0, face]).all() and fps == 30
