"""The Python API and live recognition: streaming frame by frame ends with the text of the whole
phrase, phrases split at pauses, and the edge cases run."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest

import aslfr
from aslfr.landmarks import LANDMARK_COLUMNS
from aslfr.live import format_figures, live
from aslfr.recognizer import Recognizer
from aslfr.sources import parquet_sequences, video_python

HAND = np.array([i for i, c in enumerate(LANDMARK_COLUMNS) if c.startswith(("x_right_hand_", "x_left_hand_"))])


@pytest.fixture(scope="module", params=["model.onnx", "submission.zip"])
def rec(request, exported: Path) -> Recognizer:
    return aslfr.Recognizer(exported / request.param)


def _hand(frames: np.ndarray) -> np.ndarray:
    return np.isfinite(frames[:, HAND]).any(1)


def _phrases(synth_dir: Path, n: int, gap_frames: int = 30) -> list[np.ndarray]:
    """Kaggle-layout sequences ([T, 1629]) trimmed to their hand frames, without a dropout as
    long as the pause that ends a phrase."""
    path = sorted((synth_dir / "train_landmarks").glob("*.parquet"))[0]
    out = []
    for _, frames in parquet_sequences(path, LANDMARK_COLUMNS):
        hand = np.flatnonzero(_hand(frames))
        if len(hand) < 10 or np.diff(hand).max(initial=1) >= gap_frames:
            continue
        out.append(frames[hand[0]:hand[-1] + 1])
        if len(out) == n:
            break
    assert len(out) == n
    return out


def test_streaming_frame_by_frame_ends_with_the_whole_sequences_text(rec: Recognizer, synth_dir: Path) -> None:
    for frames in _phrases(synth_dir, 4):
        stream = rec.stream(every_ms=100)
        partials = [stream.push(f) for f in frames]
        final = stream.end()
        assert final == rec.transcribe(frames) == rec.transcribe(frames[:, [LANDMARK_COLUMNS.index(c) for c in rec.columns]])
        assert len(stream.phrases) == 1 and stream.phrases[0].frames == len(frames)
        assert any(partials) and len(stream.stats.update_ms) > 1


def test_nothing_detected_before_and_after_is_not_part_of_the_phrase(rec: Recognizer, synth_dir: Path) -> None:
    frames = _phrases(synth_dir, 1)[0]
    empty = np.full((5, len(LANDMARK_COLUMNS)), np.nan, np.float32)
    stream = rec.stream()
    for f in np.concatenate([empty, frames, empty]):
        stream.push(f)
    assert stream.end() == rec.transcribe(frames)


def test_a_pause_splits_two_phrases_each_its_own_text(rec: Recognizer, synth_dir: Path) -> None:
    a, b = _phrases(synth_dir, 2)
    pause = np.full((45, len(LANDMARK_COLUMNS)), np.nan, np.float32)  # 1.5 s at 30 fps, gap 1 s
    finished = []
    stream = rec.stream(gap_ms=1000, on_phrase=finished.append)
    for f in np.concatenate([a, pause, b]):
        stream.push(f)
    assert len(finished) == 1  # the first ended during the pause, before the second began
    stream.end()
    assert [p.text for p in stream.phrases] == [rec.transcribe(a), rec.transcribe(b)]
    assert stream.phrases[1].start_s == pytest.approx((len(a) + len(pause)) / 30)


def test_no_frames_one_frame_and_more_than_the_models_frames(rec: Recognizer, synth_dir: Path) -> None:
    stream = rec.stream()
    assert stream.end() == "" and stream.phrases == []
    frames = _phrases(synth_dir, 1)[0]
    stream = rec.stream()
    stream.push(frames[0])
    assert stream.end() == rec.transcribe(frames[:1])
    long = np.concatenate([frames] * (200 // len(frames) + 1))  # past the export's 48 frames
    stream = rec.stream(every_ms=1000)
    for f in long:
        stream.push(f)
    assert stream.end() == rec.transcribe(long)


def test_transcribe_takes_a_parquet_and_names_what_it_needs(rec: Recognizer, synth_dir: Path) -> None:
    path = sorted((synth_dir / "train_landmarks").glob("*.parquet"))[0]
    sid, frames = next(parquet_sequences(path, LANDMARK_COLUMNS))
    assert rec.transcribe(path, sequence_id=sid) == rec.transcribe(frames)
    with pytest.raises(ValueError, match="holds \\d+ sequences; pass sequence_id"):
        rec.transcribe(path)
    with pytest.raises(ValueError, match="frames with 7 values each"):
        rec.transcribe(np.zeros((3, 7), np.float32))


def test_live_streams_a_landmark_file_and_reports_its_figures(exported: Path, synth_dir: Path) -> None:
    path = sorted((synth_dir / "train_landmarks").glob("*.parquet"))[0]
    ids = [sid for sid, _ in parquet_sequences(path, LANDMARK_COLUMNS)][:1]
    out = io.StringIO()
    r = live(exported / "submission.zip", path, sequence_id=ids[0], every_ms=200, out=out)
    shown = out.getvalue().splitlines()
    assert r["phrases"] and shown[-1].startswith(r["phrases"][-1]["text"] + "\t[")
    f = r["figures"]
    assert f["updates"] >= 1 and f["update_ms_median"] > 0 and f["real_time_factor"] > 0
    assert "real-time factor" in format_figures(f) and "read from a file" in format_figures(f)


def test_live_checks_its_numbers_before_it_starts(exported: Path, synth_dir: Path, capsys) -> None:
    from aslfr.cli import main

    path = sorted((synth_dir / "train_landmarks").glob("*.parquet"))[0]
    for flag, value, says in (("--limit", "0", "--limit 0: expected at least 1 sequence"),
                              ("--every-ms", "nan", "--every-ms nan: expected a positive number"),
                              ("--gap-ms", "-1", "--gap-ms -1.0: expected a positive number")):
        assert main(["live", str(path), "--model", str(exported / "submission.zip"), flag, value]) == 2
        assert capsys.readouterr().err.strip() == f"aslfr live: error: {says}"


@pytest.mark.skipif(not video_python().is_file(), reason="video extra missing: run 'make video'")
def test_live_on_a_video_with_no_person_gives_no_text(exported: Path, tmp_path: Path) -> None:
    import imageio.v3 as iio

    video = tmp_path / "empty.mp4"
    frames = np.zeros((20, 64, 64, 3), np.uint8) + np.arange(20, dtype=np.uint8)[:, None, None, None] * 5
    iio.imwrite(video, frames, extension=".mp4", fps=10, codec="libx264")
    r = live(exported / "model.onnx", video, out=io.StringIO())
    assert r["phrases"] == [] and r["figures"]["frames"] == 20
    assert r["figures"]["landmark_fps"] > 0 and r["figures"]["fps"] == pytest.approx(10)
