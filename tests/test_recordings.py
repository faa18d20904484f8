"""Your own recordings: .pose files through pose-format's own reader and writer, and a directory
of recordings with phrases.csv -> a dataset that prepare and train take unchanged."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import numpy as np
import pytest

from aslfr.config import preset
from aslfr.data.kaggle import DataError
from aslfr.data.prepare import prepare
from aslfr.landmarks import LANDMARK_COLUMNS, SELECTED_COLUMNS
from aslfr.posefile import COMPONENTS, read_pose, write_pose
from aslfr.recordings import build_dataset
from aslfr.train import train
from aslfr.sources import parquet_sequences, video_python

from conftest import TINY


@pytest.fixture(scope="module")
def sequences(synth_dir: Path) -> list[tuple[int, str, np.ndarray]]:
    """(sequence_id, phrase, [T, 1629] rows) of the synthetic set's first file."""
    rows = list(csv.DictReader(open(synth_dir / "train.csv", encoding="utf-8")))
    path = synth_dir / rows[0]["path"]
    phrase = {int(r["sequence_id"]): r["phrase"] for r in rows}
    return [(sid, phrase[sid], frames) for sid, frames in parquet_sequences(path, LANDMARK_COLUMNS)]


def test_parquet_to_pose_to_parquet_is_lossless_and_pose_format_reads_it(sequences, tmp_path: Path) -> None:
    from pose_format import Pose

    _, _, rows = sequences[0]
    assert np.isnan(rows).any() and np.isfinite(rows).any()
    path = write_pose(tmp_path / "clip.pose", rows, fps=30)
    pose = Pose.read(path.read_bytes())  # pose-format's own reader
    assert [c.name for c in pose.header.components] == [c[0] for c in COMPONENTS]
    assert pose.header.components[0].points[15] == "LEFT_WRIST" and pose.header.components[3].points[0] == "WRIST"
    assert pose.body.data.shape == (len(rows), 1, 576, 3) and pose.body.fps == 30
    # a hand that is not detected is confidence 0 (masked) in pose-format
    right = LANDMARK_COLUMNS.index("x_right_hand_0")
    missing = np.isnan(rows[:, right])
    offset = sum(len(c[2]) for c in COMPONENTS[:3])
    assert (pose.body.confidence[missing, 0, offset] == 0).all()
    assert (pose.body.confidence[~missing, 0, offset] == 1).all()
    back, fps = read_pose(path)
    assert fps == 30 and back.dtype == np.float32
    np.testing.assert_array_equal(back, rows)  # bit for bit, NaN where NaN


def test_a_bad_pose_file_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pose"
    bad.write_bytes(b"\x00\x01garbage")
    with pytest.raises(ValueError, match="bad.pose: not a readable .pose file"):
        read_pose(bad)


@pytest.fixture(scope="module")
def recordings(sequences, tmp_path_factory) -> tuple[Path, Path]:
    root = tmp_path_factory.mktemp("recordings")
    lines = []
    for k, (_, phrase, rows) in enumerate(sequences[:12]):
        write_pose(root / f"clip_{k:02d}.pose", rows, fps=30)
        lines.append((f"clip_{k:02d}.pose", phrase, ["ann", "bob", "cy", "dee"][k % 4]))
    (root / "broken.pose").write_bytes(b"not a pose file")
    lines += [("broken.pose", "abc", "ann"), ("missing.mp4", "abc", "bob")]
    with open(root / "phrases.csv", "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["file", "phrase", "participant"])
        w.writerows(lines)
    return root, root / "phrases.csv"


def test_recordings_become_a_dataset_that_prepare_and_train_take(recordings, sequences, tmp_path: Path) -> None:
    root, phrases = recordings
    out = tmp_path / "dataset"
    r = build_dataset(root, phrases, out, workers=2, progress=False)
    assert (r["recordings"], r["written"], r["failed"]) == (14, 12, 2)
    failures = dict(csv.reader(open(out / "failures.csv", encoding="utf-8")))
    assert "not a readable .pose file" in failures["broken.pose"] and failures["missing.mp4"] == "file not found"
    listed = list(csv.DictReader(open(out / "train.csv", encoding="utf-8")))
    assert len(listed) == 12 and len({r["participant_id"] for r in listed}) == 4
    summary = prepare(out, tmp_path / "prepared", progress=False)
    assert summary["sequences"] == 12
    from aslfr.data.shards import ShardDataset
    ds = ShardDataset(tmp_path / "prepared")
    k = ds.phrases.index(sequences[0][1])
    np.testing.assert_array_equal(ds.rows(k), sequences[0][2][:, [LANDMARK_COLUMNS.index(c) for c in SELECTED_COLUMNS]])
    cfg = preset("demo").override(TINY + ["epochs=1", "batch_size=4", "val_fraction=0.25"]).with_charmap(ds.charmap)
    row = train(cfg, tmp_path / "prepared", tmp_path / "run", progress=False)
    assert row["epoch"] == 1


def test_a_rerun_keeps_finished_recordings_and_redoes_a_changed_one(recordings, sequences, tmp_path: Path) -> None:
    root, phrases = recordings
    out = tmp_path / "dataset"
    build_dataset(root, phrases, out, progress=False)
    files = {p.name: p.stat().st_mtime_ns for p in (out / "train_landmarks").glob("*.parquet")}
    os.utime(root / "clip_03.pose", ns=(1, 1))  # a changed source (its time differs)
    build_dataset(root, phrases, out, progress=False)
    after = {p.name: p.stat().st_mtime_ns for p in (out / "train_landmarks").glob("*.parquet")}
    changed = [name for name in files if files[name] != after[name]]
    assert len(changed) == 1


def test_phrases_outside_a_given_map_are_failures_and_bad_csvs_are_named(recordings, tmp_path: Path) -> None:
    from aslfr.vocab import CharacterMap

    root, phrases = recordings
    from aslfr.vocab import COMPETITION

    no_slash = CharacterMap([c for c in COMPETITION.tokens if c not in ":/"])
    r = build_dataset(root, phrases, tmp_path / "no_slash", progress=False, characters=no_slash)
    outside = [f for f, why in r["failures"].items() if "is not in the character map" in why]
    assert outside and r["written"] == 12 - len(outside)
    with pytest.raises(DataError, match="no recording could be used .* is not in the character map"):
        build_dataset(root, phrases, tmp_path / "digits", progress=False, characters=CharacterMap(list("0123456789")))
    bad = tmp_path / "bad.csv"
    bad.write_text("file,phrase\nclip_00.pose,abc\n", encoding="utf-8")
    with pytest.raises(DataError, match="bad.csv: missing column\\(s\\) participant"):
        build_dataset(root, bad, tmp_path / "x", progress=False)


def test_transcribe_and_live_read_a_pose_file(exported: Path, sequences, tmp_path: Path) -> None:
    import io

    from aslfr.live import live
    from aslfr.recognizer import Recognizer

    _, _, rows = sequences[1]
    path = write_pose(tmp_path / "one.pose", rows, fps=30)
    rec = Recognizer(exported / "model.onnx")
    assert rec.transcribe(path) == rec.transcribe(rows)
    r = live(exported / "model.onnx", path, out=io.StringIO())
    assert r["figures"]["frames"] == len(rows)


@pytest.mark.skipif(not video_python().is_file(), reason="video extra missing: run 'make video'")
def test_videos_in_a_recordings_directory_go_through_mediapipe(recordings, tmp_path: Path) -> None:
    """A video with nobody in it is a failure with its reason; the .pose recordings beside it
    are written; workers extract in parallel."""
    import shutil

    import imageio.v3 as iio

    root = tmp_path / "rec"
    shutil.copytree(recordings[0], root)
    frames = np.zeros((12, 64, 64, 3), np.uint8) + np.arange(12, dtype=np.uint8)[:, None, None, None] * 9
    iio.imwrite(root / "empty.mp4", frames, extension=".mp4", fps=10, codec="libx264")
    with open(root / "phrases.csv", "a", newline="", encoding="utf-8") as f:
        csv.writer(f).writerow(["empty.mp4", "abc", "ann"])
    r = build_dataset(root, root / "phrases.csv", tmp_path / "out", workers=2, progress=False)
    assert r["failures"]["empty.mp4"] == "nothing detected in any frame" and r["written"] == 12
