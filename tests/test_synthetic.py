import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from aslfr.data.synthetic import (CORRUPTION_KINDS, INSTANCE_NOISE, TEMPLATES, hand_points, make_phrase,
                                  make_signer, render, synthesize)
from aslfr.landmarks import LANDMARK_COLUMNS
from aslfr.vocab import CHAR_TO_INDEX, CHARACTERS


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _normalised_hand(params: np.ndarray) -> np.ndarray:
    pts = hand_points(params)[..., :2]
    pts = pts - pts[..., :1, :]
    return pts / np.linalg.norm(pts[..., 9, :], axis=-1)[..., None, None]


def test_writes_the_kaggle_layout(synth_dir: Path) -> None:
    train = _rows(synth_dir / "train.csv")
    assert list(train[0]) == ["path", "file_id", "sequence_id", "participant_id", "phrase"]
    assert len(train) == 80 and len({r["path"] for r in train}) == 2
    assert len(_rows(synth_dir / "supplemental_metadata.csv")) == 12
    assert json.loads((synth_dir / "character_to_prediction_index.json").read_text()) == CHAR_TO_INDEX
    path = synth_dir / train[0]["path"]
    schema = pq.read_schema(path)
    assert schema.names == ["frame", *LANDMARK_COLUMNS, "sequence_id"]
    assert len(LANDMARK_COLUMNS) == 1629 and LANDMARK_COLUMNS[468] == "x_left_hand_0"
    assert str(schema.field("x_face_0").type) == "float" and str(schema.field("frame").type) == "int16"
    assert json.loads(schema.metadata[b"pandas"])["index_columns"] == ["sequence_id"]
    ids = set(pq.read_table(path, columns=["sequence_id"]).column(0).to_pylist())
    assert ids == {int(r["sequence_id"]) for r in train if r["path"] == train[0]["path"]}


def test_corruptions_are_listed_by_kind(synth_dir: Path) -> None:
    rows = _rows(synth_dir / "corruptions.csv")
    assert {r["kind"] for r in rows} == set(CORRUPTION_KINDS)
    listed = {r["sequence_id"] for r in _rows(synth_dir / "train.csv")}
    assert {r["sequence_id"] for r in rows} <= listed


def test_deterministic_given_the_seed(tmp_path: Path) -> None:
    for name in ("a", "b"):
        synthesize(tmp_path / name, sequences=6, participants=2, seed=3, progress=False)
    a, b = (sorted((tmp_path / n / "train_landmarks").iterdir()) for n in ("a", "b"))
    assert [p.name for p in a] == [p.name for p in b]
    assert a[0].read_bytes() == b[0].read_bytes()
    assert (tmp_path / "a" / "train.csv").read_text() == (tmp_path / "b" / "train.csv").read_text()
    synthesize(tmp_path / "c", sequences=6, participants=2, seed=4, progress=False)
    assert (tmp_path / "c" / "train.csv").read_text() != (tmp_path / "a" / "train.csv").read_text()


def test_every_character_has_a_distinct_hand_shape() -> None:
    """Instances of a letter (with per-instance variation) are nearest to their own template."""
    shapes = _normalised_hand(TEMPLATES)                          # (59, 21, 2)
    rng = np.random.default_rng(1)
    static = [i for i in range(59) if CHARACTERS[i] not in "jz"]   # j, z: told apart by motion
    noisy = TEMPLATES[static][:, None] + rng.normal(0, INSTANCE_NOISE, (len(static), 20, TEMPLATES.shape[1]))
    inst = _normalised_hand(noisy)                                 # (57, 20, 21, 2)
    d = np.sqrt(((inst[:, :, None] - shapes[static][None, None]) ** 2).sum(-1)).mean(-1)
    accuracy = (d.argmin(-1) == np.arange(len(static))[:, None]).mean()
    assert accuracy > 0.9, accuracy


def test_close_letters_are_close_and_signers_differ_as_much() -> None:
    shapes = _normalised_hand(TEMPLATES)
    dist = lambda a, b: float(np.sqrt(((a - b) ** 2).sum(-1)).mean())  # noqa: E731
    c = CHAR_TO_INDEX
    close = [dist(shapes[c[a]], shapes[c[b]]) for a, b in ("mn", "as", "se", "uv", "ur")]
    far = [dist(shapes[c[a]], shapes[c[b]]) for a, b in ("ab", "lw", "y5", "co")]
    assert max(close) < min(far)
    rng = np.random.default_rng(0)
    signers = [make_signer(rng) for _ in range(40)]
    between = [dist(_normalised_hand(TEMPLATES[c["m"]] + s.style), shapes[c["m"]]) for s in signers]
    ratio = np.median(between) / np.median(close)
    assert 0.3 < ratio < 3.0, ratio


def test_recordings_look_like_the_competitions(synth_dir: Path) -> None:
    rng = np.random.default_rng(11)
    per_char, missing, handed = [], [], set()
    for k in range(30):
        signer = make_signer(rng)
        phrase = make_phrase(rng)
        xyz = render(phrase, signer, rng)
        assert xyz.shape[1:] == (543, 3) and xyz.dtype == np.float32
        per_char.append(len(xyz) / len(phrase))
        hand = slice(522, 543) if signer.right_handed else slice(468, 489)
        handed.add(signer.right_handed)
        missing.append(np.isnan(xyz[:, hand, 0]).all(1).mean())
        # The signing arm's pose wrist sits at the hand's wrist where the hand is seen.
        wrist = 522 if signer.right_handed else 468
        pose_wrist = 468 + 21 + (16 if signer.right_handed else 15)
        seen = ~np.isnan(xyz[:, wrist, 0])
        assert np.abs(xyz[seen, wrist, :2] - xyz[seen, pose_wrist, :2]).max() < 0.05
        # Lips below the nose tip, and the face moves a little but not much.
        assert np.nanmean(xyz[:, 17, 1]) > np.nanmean(xyz[:, 1, 1])
        assert 1e-4 < np.nanstd(xyz[:, 17, 1]) < 0.05
    assert 7 <= np.mean(per_char) <= 13
    assert 0.02 <= np.mean(missing) <= 0.35
    assert handed == {True, False}


def test_phrases_are_like_the_competitions() -> None:
    rng = np.random.default_rng(5)
    phrases = [make_phrase(rng) for _ in range(4000)]
    lengths = [len(p) for p in phrases]
    assert min(lengths) >= 1 and max(lengths) <= 31
    assert 15 <= np.mean(lengths) <= 21
    assert set("".join(phrases)) == set(CHARACTERS)


def test_planted_corruptions_are_what_they_claim(synth_dir: Path, prepared_dir: Path) -> None:
    import pyarrow.parquet as pq

    meta = pq.read_table(prepared_dir / "metadata.parquet").to_pydict()
    hands = {s: max(r, l) for s, r, l in zip(meta["sequence_id"], meta["n_right_hand_frames"],
                                             meta["n_left_hand_frames"])}
    kinds = {int(r["sequence_id"]): r["kind"] for r in _rows(synth_dir / "corruptions.csv")}
    no_hand = [s for s, k in kinds.items() if k == "no_hand"]
    assert no_hand and all(hands[s] <= 3 for s in no_hand)
    clean = [s for s in hands if s not in kinds]
    assert np.median([hands[s] for s in clean]) > 30

