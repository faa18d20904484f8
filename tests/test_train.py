import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

import aslfr.train as train_module
from aslfr.config import Config, preset
from aslfr.data.shards import ShardDataset
from aslfr.checkpoints import TrainingError
from aslfr.data.loader import EpochBatches, select_samples, validation_mask
from aslfr.train import train

from conftest import BF16, FLOAT32, TINY


def _cfg(*extra: str):
    return preset("demo").override([*TINY, *extra])


def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]


def _metrics(run: Path) -> list[dict]:
    rows = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("epoch_seconds")
    return rows


def test_epoch_batches_split_every_global_batch_over_processes() -> None:
    idx = np.arange(100, 137)
    one = list(EpochBatches(idx, 8, seed=1, first_epoch=0, epochs=2))
    two = [list(EpochBatches(idx, 8, seed=1, first_epoch=0, epochs=2, rank=r, world=2)) for r in (0, 1)]
    assert len(one) == 2 * (37 // 8)
    for k, batch in enumerate(one):
        assert batch == two[0][k] + two[1][k]
    epochs = [{i for _, i in sum(one[e * 4:(e + 1) * 4], [])} for e in (0, 1)]
    assert epochs[0] != epochs[1] or one[0] != one[4]  # reshuffled per epoch
    assert list(EpochBatches(idx, 8, 1, 1, 2)) == one[4:]  # a resumed epoch is the same epoch


def test_seed_split_holds_out_the_first_files(prepared_dir: Path) -> None:
    ds = ShardDataset(prepared_dir)
    val = validation_mask(ds, preset("seed-base"))
    files = sorted(np.unique(ds.meta["file_id"]))
    assert set(np.unique(ds.meta["file_id"][val])) == {files[0]}  # max(1, int(0.05 * 2)) files
    by_person = validation_mask(ds, preset("seed-base").override(["split=participant", "val_fraction=0.25"]))
    held = np.unique(ds.meta["participant_id"][by_person])
    assert len(held) == 2 and not np.isin(ds.meta["participant_id"][~by_person], held).any()


def test_split_seed_lets_runs_of_other_seeds_share_a_split(prepared_dir: Path) -> None:
    """An ensemble's runs hold out the same participants with one split_seed (the seed alone
    also draws the split, so two seeds differ), and folds follow it too."""
    ds = ShardDataset(prepared_dir)
    by = ["split=participant", "val_fraction=0.25"]
    masks = {s: validation_mask(ds, preset("seed-base").override(by + [f"seed={s}"])) for s in range(4)}
    assert any(not np.array_equal(masks[0], masks[s]) for s in range(1, 4))
    for s in range(1, 4):
        shared = validation_mask(ds, preset("seed-base").override(by + [f"seed={s}", "split_seed=0"]))
        assert np.array_equal(shared, masks[0])
    folds = ["split=participant", "folds=4", "fold=1"]
    assert np.array_equal(validation_mask(ds, preset("seed-base").override(folds + ["seed=7", "split_seed=3"])),
                          validation_mask(ds, preset("seed-base").override(folds + ["seed=3"])))
    with pytest.raises(ValueError, match="split_seed"):
        preset("seed-base").override(["split_seed=-2"]).check()


def test_length_filter_drops_samples_without_enough_hand_frames(prepared_dir: Path) -> None:
    ds = ShardDataset(prepared_dir)
    split = select_samples(ds, preset("seed-base"), None)
    hands = np.maximum(ds.meta["n_right_hand_frames"], ds.meta["n_left_hand_frames"])
    lengths = np.array([len(p) for p in ds.phrases])
    assert np.all(2 * lengths[split["train"]] < hands[split["train"]])
    assert np.all(2 * lengths[split["dropped_by_filter"]] >= hands[split["dropped_by_filter"]])
    assert len(split["dropped_by_filter"]) > 0


def test_score_filter_joins_by_sequence_id_and_names_what_is_missing(prepared_dir: Path, tmp_path: Path) -> None:
    ds = ShardDataset(prepared_dir)
    ids = ds.meta["sequence_id"]
    scores = np.linspace(-1, 1, len(ids))
    path = tmp_path / "scores.parquet"
    order = np.random.default_rng(0).permutation(len(ids))  # row order must not matter
    pq.write_table(pa.table({"sequence_id": ids[order], "score": scores[order]}), path)
    split = select_samples(ds, preset("seed-final"), path)
    val = validation_mask(ds, preset("seed-final"))
    assert set(split["train"]) == set(np.flatnonzero(~val & (scores > 0.2)))
    pq.write_table(pa.table({"sequence_id": ids[3:], "score": scores[3:]}), path)
    with pytest.raises(ValueError, match=r"3 of \d+ samples have no score \(first missing sequence_id"):
        select_samples(ds, preset("seed-final"), path)


def test_training_writes_metrics_curves_and_checkpoints(prepared_dir: Path, tmp_path: Path) -> None:
    run = tmp_path / "run"
    row = train(_cfg(), prepared_dir, run, progress=False)
    assert row["epoch"] == 3 and np.isfinite(row["loss"])
    rows = _metrics(run)
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert all(-5 < r["val_score"] <= 1 and "val_score_filtered" in r for r in rows)
    assert rows[-1]["loss"] < rows[0]["loss"]
    assert (run / "curves.png").stat().st_size > 1000
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == [
        "epoch_00001.pt", "epoch_00002.pt", "epoch_00003.pt", "last.pt"]


@pytest.mark.parametrize("precision", [FLOAT32, BF16], ids=["float32", "bf16"])
def test_resume_is_bitwise_the_uninterrupted_run(prepared_dir: Path, tmp_path: Path, precision: str) -> None:
    """In float32 and under bf16 autocast alike (native or emulated by the CPU: the same
    arithmetic), an interrupted and resumed run is bit for bit the uninterrupted one."""
    full, cut = tmp_path / "full", tmp_path / "cut"
    cfg = _cfg("checkpoint_every=3", precision)  # the interruption's checkpoint is the only one in between
    train(cfg, prepared_dir, full, progress=False)
    train(cfg, prepared_dir, cut, stop_after_epochs=1, progress=False)
    assert torch.load(cut / "checkpoints" / "last.pt", weights_only=False)["epoch"] == 1
    train(cfg, prepared_dir, cut, resume=True, progress=False)
    a, b = _weights(full), _weights(cut)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert _metrics(full) == _metrics(cut)


def test_resume_refuses_other_settings(prepared_dir: Path, tmp_path: Path) -> None:
    train(_cfg("epochs=1"), prepared_dir, tmp_path, progress=False)
    with pytest.raises(TrainingError, match="holds a run of another job \\(lr 0.003 -> 0.5\\)"):
        train(_cfg("epochs=1", "lr=0.5"), prepared_dir, tmp_path, resume=True, progress=False)


def test_nan_loss_stops_naming_step_and_sequences_and_keeps_the_checkpoint(
        prepared_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    cfg = _cfg()
    good = len(select_samples(ShardDataset(prepared_dir), cfg, None)["train"]) // 8 + 2  # into epoch 1
    real = torch.nn.functional.ctc_loss
    calls = {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        out = real(*args, **kwargs)
        return out * float("nan") if calls["n"] > good else out

    monkeypatch.setattr(train_module.F, "ctc_loss", poisoned)
    with pytest.raises(TrainingError, match=rf"loss is nan at step {good} \(epoch 1\); batch sequence_ids \[\d+"):
        train(cfg, prepared_dir, tmp_path, progress=False)
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert state["epoch"] == 1 and all(torch.isfinite(v).all() for v in state["model"].values() if v.is_floating_point())


def test_two_processes_train_like_one_on_the_same_global_batch(prepared_dir: Path, tmp_path: Path) -> None:
    """torchrun with 2 CPU processes (gloo) against one process: same batches, same augmentation,
    BatchNorm statistics synchronised; dropout off so that both draw nothing at random, and
    padding to max_len so that every process's frames (padding included) are the same.
    Float32 (TINY's bf16=false): the two differ only in the order of float32 sums, which the
    tolerance allows for; under bf16 autocast each process rounds its half of the batch's
    activations to 8 bits of mantissa, and two epochs amplify that past any useful tolerance."""
    sets = [*TINY, "epochs=2", "branch_dropout=0", "attention_dropout=0", "late_dropout=0", "pad_to_batch=false"]
    args = ["train", "--preset", "demo", "--data", str(prepared_dir)] + sum((["--set", s] for s in sets), [])
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run([sys.executable, "-m", "aslfr.cli", *args, "--out", str(tmp_path / "one")],
                   check=True, env=env, capture_output=True)
    subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
                    "-m", "aslfr.cli", *args, "--out", str(tmp_path / "two")],
                   check=True, env=env, capture_output=True)
    a, b = _weights(tmp_path / "one"), _weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for k in a:  # the same up to the order of float32 sums
        assert a[k].shape == b[k].shape
        if a[k].is_floating_point():
            assert torch.allclose(a[k], b[k], rtol=1e-3, atol=1e-5), k
    ma, mb = _metrics(tmp_path / "one"), _metrics(tmp_path / "two")
    assert [r["epoch"] for r in ma] == [r["epoch"] for r in mb] == [1, 2]
    for ra, rb in zip(ma, mb):
        assert ra["loss"] == pytest.approx(rb["loss"], rel=1e-4)


def test_bf16_auto_follows_the_hardware_and_true_trains_in_bf16_on_cpu(prepared_dir: Path, tmp_path: Path,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    import aslfr.hardware as hardware
    from aslfr.hardware import bf16_enabled, native_bf16

    assert bf16_enabled("false", "cpu") is False and bf16_enabled("true", "cpu") is True
    assert bf16_enabled("auto", "cpu") == native_bf16("cpu")
    monkeypatch.setattr(hardware, "native_bf16", lambda device: True)
    assert bf16_enabled("auto", "cpu") is True
    assert preset("demo").bf16 == "auto" and preset("seed-base").bf16 == "false"  # the seed trained in float32
    assert Config().override(["bf16=on"]).bf16 == "true"
    with pytest.raises(ValueError, match="bf16=maybe: expected true, false or auto"):
        Config().override(["bf16=maybe"]).check()
    seen = []
    real = torch.nn.functional.ctc_loss

    def spy(log_probs, *args, **kwargs):
        seen.append(log_probs.dtype)
        return real(log_probs, *args, **kwargs)

    monkeypatch.setattr(train_module.F, "ctc_loss", spy)
    outputs = []
    forward = train_module.FingerspellingModel.forward

    def watched(self, *args, **kwargs):
        out = forward(self, *args, **kwargs)
        outputs.append(out.dtype)
        return out

    monkeypatch.setattr(train_module.FingerspellingModel, "forward", watched)
    row = train(_cfg("epochs=1", "bf16=true"), prepared_dir, tmp_path, progress=False)
    assert np.isfinite(row["loss"]) and set(seen) == {torch.float32}  # the loss in float32
    assert torch.bfloat16 in outputs  # the network ran under bf16 autocast
    state = torch.load(tmp_path / "checkpoints" / "last.pt", weights_only=False)
    assert all(v.dtype == torch.float32 for v in state["model"].values() if v.is_floating_point())
