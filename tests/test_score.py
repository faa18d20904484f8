from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from aslfr.baseline import TemplateBaseline, baseline_score, hand_shapes
from aslfr.cli import main
from aslfr.data.shards import ShardDataset
from aslfr.metric import sample_score
from aslfr.report import detection
from aslfr.score import merge_out_of_fold, score


def test_score_covers_every_sequence_keyed_by_id(trained_run: Path, prepared_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "scores.parquet"
    assert main(["score", "--checkpoint", str(trained_run / "checkpoints" / "last.pt"),
                 "--data", str(prepared_dir), "--out", str(out), "--batch-size", "16"]) == 0
    table = pq.read_table(out).to_pydict()
    ds = ShardDataset(prepared_dir)
    assert sorted(table["sequence_id"]) == sorted(ds.meta["sequence_id"].tolist())  # train, val, supplemental
    phrase_of = dict(zip(ds.meta["sequence_id"].tolist(), ds.phrases))
    for sid, pred, phrase, s in zip(table["sequence_id"], table["prediction"], table["phrase"], table["score"]):
        assert phrase == phrase_of[sid]
        assert s == pytest.approx(sample_score(pred, phrase))
    assert out.with_suffix(".png").stat().st_size > 1000


def test_out_of_fold_merge_rejects_a_sample_scored_twice(trained_run: Path, prepared_dir: Path, tmp_path: Path) -> None:
    ckpt = trained_run / "checkpoints" / "last.pt"
    score(ckpt, prepared_dir, tmp_path / "a.parquet", indices=np.arange(0, 10), progress=False)
    score(ckpt, prepared_dir, tmp_path / "b.parquet", indices=np.arange(10, 20), progress=False)
    merged = merge_out_of_fold([tmp_path / "a.parquet", tmp_path / "b.parquet"], tmp_path / "m.parquet")
    assert merged["sequences"] == 20
    score(ckpt, prepared_dir, tmp_path / "c.parquet", indices=np.arange(5, 12), progress=False)
    with pytest.raises(ValueError, match="more than one fold"):
        merge_out_of_fold([tmp_path / "a.parquet", tmp_path / "c.parquet"], tmp_path / "bad.parquet")


def test_detection_counts_precision_and_recall_per_kind() -> None:
    kinds = np.array(["", "", "", "", "wrong_phrase", "wrong_phrase", "no_hand", "no_hand"])
    dropped = np.array([True, False, False, False, True, True, True, False])
    d = detection(dropped, kinds)
    assert d["dropped"] == 4 and d["precision"] == pytest.approx(3 / 4) and d["recall"] == pytest.approx(3 / 4)
    assert d["kinds"]["wrong_phrase"] == {"planted": 2, "found": 2, "recall": 1.0, "precision": 2 / 3}
    assert d["kinds"]["no_hand"]["recall"] == 0.5 and d["kinds"]["no_hand"]["precision"] == 0.5


def test_hand_shape_is_invariant_to_position_and_size() -> None:
    rng = np.random.default_rng(0)
    coords = np.full((5, 100, 2), np.nan, np.float32)
    coords[:, :21] = rng.random((5, 21, 2))
    moved = coords.copy()
    moved[:, :21] = coords[:, :21] * 1.7 + 0.3
    np.testing.assert_allclose(hand_shapes(coords), hand_shapes(moved), atol=1e-5)
    coords[2, :21] = np.nan  # hand not detected in one frame: that frame is left out
    assert hand_shapes(coords).shape == (4, 42)


def test_template_baseline_decodes_held_out_signers(prepared_dir: Path) -> None:
    ds = ShardDataset(prepared_dir)
    people = ds.meta["participant_id"]
    val = np.flatnonzero(people == np.unique(people)[0])
    train = np.flatnonzero(people != np.unique(people)[0])
    r = baseline_score(ds, train, val)
    assert r["templates"] > 20 and -1.0 < r["baseline_val_score"] <= 1.0
    model = TemplateBaseline().fit(ds, train)
    assert all(set(model.predict_one(ds.coords(int(i)))) <= set(model.chars) for i in val[:5])


def test_scoring_normalises_with_the_checkpoints_statistics(trained_run: Path, prepared_dir: Path,
                                                            tmp_path: Path) -> None:
    """Scoring other prepared data (other statistics) must preprocess as training did."""
    import shutil

    other = tmp_path / "other"
    shutil.copytree(prepared_dir, other)
    with np.load(other / "stats.npz") as d:
        mean, std = d["mean"], d["std"]
    np.savez(other / "stats.npz", mean=mean + 0.5, std=std * 3)
    ckpt = trained_run / "checkpoints" / "last.pt"
    a = score(ckpt, prepared_dir, tmp_path / "a.parquet", progress=False)
    b = score(ckpt, other, tmp_path / "b.parquet", progress=False)
    assert a == b
    assert pq.read_table(tmp_path / "a.parquet").column("prediction").to_pylist() == \
        pq.read_table(tmp_path / "b.parquet").column("prediction").to_pylist()


def test_score_runs_in_the_checkpoints_precision_unless_told(trained_run: Path, prepared_dir: Path, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """The trained_run checkpoint trained with bf16=false: float32 on every CPU; --bf16 true runs
    the predictions under bf16 autocast (native or emulated) and still scores every sequence."""
    import torch

    from aslfr.model import FingerspellingModel

    ckpt = str(trained_run / "checkpoints" / "last.pt")
    assert main(["score", "--checkpoint", ckpt, "--data", str(prepared_dir), "--out", str(tmp_path / "a.parquet")]) == 0
    assert "in float32" in capsys.readouterr().out
    seen = []
    real = FingerspellingModel.forward
    monkeypatch.setattr(FingerspellingModel, "forward",
                        lambda self, *a, **k: seen.append(torch.is_autocast_enabled("cpu")) or real(self, *a, **k))
    r = score(ckpt, prepared_dir, tmp_path / "b.parquet", bf16="true", progress=False)
    assert r["precision"] == "bf16 autocast" and seen and all(seen)
    assert r["sequences"] == len(ShardDataset(prepared_dir))
    assert main(["score", "--checkpoint", ckpt, "--data", str(prepared_dir), "--out", str(tmp_path / "c.parquet"),
                 "--batch-size", "-3"]) == 2
    assert "--batch-size -3: expected a whole number of sequences, at least 1" in capsys.readouterr().err
    assert not (tmp_path / "c.parquet").exists()
