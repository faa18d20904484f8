"""The rerun, resume and bad-input contract: an existing output continues the same job or is
refused with what differs; interrupted work is not lost; a user error is one line, exit status 2."""

from __future__ import annotations

import csv
import json
import shutil
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
import torch

from aslfr.cli import main
from aslfr.config import preset
from aslfr.data.kaggle import DataError
from aslfr.data.prepare import prepare
from aslfr.data.synthetic import synthesize
from aslfr.checkpoints import TrainingError, load_model
from aslfr.train import train

from conftest import TINY, write_csv


def _cfg(*more: str):
    return preset("demo").override(TINY + ["epochs=2", *more])


def _one_line_error(capsys, argv: list[str], *says: str) -> str:
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    for text in says:
        assert text in err, err
    return err


@pytest.fixture(scope="module")
def other_data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("other")
    synthesize(out, sequences=40, participants=4, files=2, seed=99, progress=False)
    return out


@pytest.fixture(scope="module")
def other_prepared(other_data: Path, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("other_prepared")
    prepare(other_data, out, progress=False)
    return out


# --------------------------------------------------------------------------------------------
# prepare
# --------------------------------------------------------------------------------------------

def test_prepare_refuses_a_directory_prepared_from_other_data(synth_dir: Path, other_data: Path, tmp_path: Path,
                                                              capsys) -> None:
    prepare(synth_dir, tmp_path, progress=False)
    before = (tmp_path / "metadata.parquet").read_bytes()
    _one_line_error(capsys, ["prepare", str(other_data), str(tmp_path)], str(tmp_path), "other data")
    assert (tmp_path / "metadata.parquet").read_bytes() == before
    # the same data again continues (nothing to do) and gives the same files
    prepare(synth_dir, tmp_path, progress=False)
    assert (tmp_path / "metadata.parquet").read_bytes() == before


def test_prepare_refuses_a_shard_made_from_a_changed_file(synth_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    prepare(data, tmp_path / "out", progress=False)
    rows = list(csv.DictReader(open(data / "train.csv", encoding="utf-8")))
    rows[0]["phrase"] = "another phrase"
    write_csv(data / "train.csv", rows)
    with pytest.raises(DataError, match="was prepared from other input \\(csv_rows"):
        prepare(data, tmp_path / "out", progress=False)


def test_prepare_counts_an_empty_file_and_a_file_of_unknown_phrases(synth_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    rows = list(csv.DictReader(open(data / "train.csv", encoding="utf-8")))
    first, second = sorted({r["path"] for r in rows})
    table = pq.read_table(data / first)
    pq.write_table(table.slice(0, 0), data / first)  # a parquet file with no rows
    for r in rows:
        if r["path"] == second:
            r["phrase"] = "ÄÖÜ"  # every phrase of the other file outside the map
    write_csv(data / "train.csv", rows)
    with pytest.raises(DataError, match="no usable sequence in 2 file\\(s\\) \\(.*listed in the csv but has no rows"):
        prepare(data, tmp_path / "out", progress=False)
    assert not (tmp_path / "out" / "metadata.parquet").exists()


@pytest.mark.parametrize("damage", ["every row twice", "a row without its frame", "a row without its sequence"])
def test_rows_that_are_not_one_sequence_are_named(synth_dir: Path, tmp_path: Path, capsys, damage: str) -> None:
    """A landmark file whose rows are all there twice, or a row with no frame or sequence number,
    is refused naming the file and sequence, not silently doubled or reordered."""
    import pyarrow as pa

    data = tmp_path / "data"
    shutil.copytree(synth_dir, data)
    path = sorted((data / "train_landmarks").glob("*.parquet"))[0]
    table = pq.read_table(path)
    first = table.column("sequence_id")[0].as_py()
    if damage == "every row twice":
        low = min(table.column("sequence_id").to_pylist())  # the sorted rows' first sequence
        frame = min(f for q, f in zip(table.column("sequence_id").to_pylist(), table.column("frame").to_pylist())
                    if q == low)
        table, says = pa.concat_tables([table, table]), f"sequence {low} has frame {frame} twice"
    else:
        key = "frame" if "frame" in damage else "sequence_id"
        column = table.column(key).to_pylist()
        column[3] = None
        table = table.set_column(table.schema.get_field_index(key), key, pa.array(column, table.schema.field(key).type))
        says = f"1 row(s) have no {key}; the first is row 3" + (f" (sequence {first})" if key == "frame" else "")
    pq.write_table(table, path)
    with pytest.raises(DataError) as e:
        prepare(data, tmp_path / "p", progress=False)
    assert str(e.value).startswith(f"{path}: {says}"), e.value


def test_a_ctrl_c_that_a_library_drops_still_stops_the_command(synth_dir: Path, tmp_path: Path, monkeypatch,
                                                              capsys) -> None:
    """A Ctrl-C caught and let pass somewhere inside the work (a library's `except BaseException`)
    still ends the command with the interrupted status, not 0; the rerun finishes the job."""
    import signal

    import aslfr.data.prepare as preparing

    original = preparing.prepare_file

    def swallowing(*args, **kwargs):  # noqa: ANN002, ANN003
        try:
            signal.raise_signal(signal.SIGINT)
        except KeyboardInterrupt:
            pass
        return original(*args, **kwargs)

    monkeypatch.setattr(preparing, "prepare_file", swallowing)
    assert main(["prepare", str(synth_dir), str(tmp_path / "p"), "--workers", "1"]) == 130
    assert "interrupted; rerun the same command to resume" in capsys.readouterr().err
    monkeypatch.setattr(preparing, "prepare_file", original)
    assert main(["prepare", str(synth_dir), str(tmp_path / "p"), "--workers", "1"]) == 0


def test_a_damaged_prepared_directory_is_named(prepared_dir: Path, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "prepared"
    shutil.copytree(prepared_dir, copy)
    (copy / "stats.npz").unlink()
    _one_line_error(capsys, ["train", "--preset", "demo", "--data", str(copy), "--out", str(tmp_path / "r")],
                    "stats.npz: missing from the prepared directory")
    shutil.copy(prepared_dir / "stats.npz", copy / "stats.npz")
    next(copy.glob("shards/*.npy")).unlink()
    err = _one_line_error(capsys, ["train", "--preset", "demo", "--data", str(copy), "--out", str(tmp_path / "r")],
                          ".npy: missing from the prepared directory")
    assert not (tmp_path / "r").exists(), err


def test_a_cut_off_shard_is_named_before_training(prepared_dir: Path, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "prepared"
    shutil.copytree(prepared_dir, copy)
    shard = sorted(copy.glob("shards/*.npy"))[0]
    shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
    _one_line_error(capsys, ["train", "--preset", "demo", "--data", str(copy), "--out", str(tmp_path / "r")],
                    str(shard), "cut off")
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("damage", ["no std", "a pickle", "wrong shape", "not finite", "not a zip"])
def test_damaged_statistics_are_named_before_training(prepared_dir: Path, tmp_path: Path, capsys, damage: str) -> None:
    copy = tmp_path / "prepared"
    shutil.copytree(prepared_dir, copy)
    stats = copy / "stats.npz"
    mean = np.load(prepared_dir / "stats.npz")["mean"]
    with open(stats, "wb") as f:
        if damage == "no std":
            np.savez(f, mean=mean)
        elif damage == "a pickle":
            np.savez(f, mean=np.array([{"x": 1}], dtype=object), std=mean)
        elif damage == "wrong shape":
            np.savez(f, mean=mean[:10], std=mean)
        elif damage == "not finite":
            np.savez(f, mean=np.full_like(mean, np.nan), std=mean)
        else:
            f.write(b"junk")
    says = {"no std": "no std array", "a pickle": "holds Python objects, not float arrays; refused",
            "wrong shape": "'mean' is float32 [10]", "not finite": "with non-finite values",
            "not a zip": "unreadable"}[damage]
    _one_line_error(capsys, ["train", "--preset", "demo", "--data", str(copy), "--out", str(tmp_path / "r")],
                    str(stats), says)
    assert not (tmp_path / "r").exists()


@pytest.mark.parametrize("damage", ["a string dim", "a non-dict model", "stats of the wrong shape"])
def test_a_checkpoint_with_malformed_contents_is_one_line(prepared_dir: Path, tmp_path: Path, capsys,
                                                          damage: str) -> None:
    train(_cfg("epochs=1"), prepared_dir, tmp_path / "run", progress=False)
    state = torch.load(tmp_path / "run" / "checkpoints" / "last.pt", weights_only=False)
    if damage == "a string dim":
        state["config"]["dim"] = "wide"
    elif damage == "a non-dict model":
        state["model"] = [1, 2, 3]
    else:
        state["stats"]["mean"] = state["stats"]["mean"][:5]
    bad = tmp_path / "bad.pt"
    torch.save(state, bad)
    says = {"a string dim": "its settings cannot build a model", "a non-dict model": "is not a set of named weights",
            "stats of the wrong shape": "its normalisation 'mean' is not 600 finite floats"}[damage]
    _one_line_error(capsys, ["score", "--checkpoint", str(bad), "--data", str(prepared_dir),
                             "--out", str(tmp_path / "s.parquet")], str(bad), says)
    _one_line_error(capsys, ["score", "--checkpoint", str(tmp_path / "run" / "checkpoints" / "last.pt"),
                             "--data", str(prepared_dir), "--out", str(tmp_path)], "is a directory")


# --------------------------------------------------------------------------------------------
# train
# --------------------------------------------------------------------------------------------

def _weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "checkpoints" / "last.pt", weights_only=False)["model"]


def test_the_same_command_continues_an_interrupted_run(prepared_dir: Path, tmp_path: Path) -> None:
    cfg = _cfg("checkpoint_every=1")
    train(cfg, prepared_dir, tmp_path / "full", progress=False)
    train(cfg, prepared_dir, tmp_path / "cut", stop_after_epochs=1, progress=False)
    train(cfg, prepared_dir, tmp_path / "cut", progress=False)  # no --resume: it continues
    a, b = _weights(tmp_path / "full"), _weights(tmp_path / "cut")
    assert all(torch.equal(a[k], b[k]) for k in a)
    rows = [json.loads(x) for x in (tmp_path / "cut" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2]


def test_another_job_in_the_same_directory_is_refused_naming_what_differs(prepared_dir: Path, other_prepared: Path,
                                                                         tmp_path: Path) -> None:
    train(_cfg("epochs=1"), prepared_dir, tmp_path, progress=False)
    config = (tmp_path / "config.json").read_text()
    metrics = (tmp_path / "metrics.jsonl").read_text()
    with pytest.raises(TrainingError, match="another job \\(lr 0.003 -> 0.5\\)"):
        train(_cfg("epochs=1", "lr=0.5"), prepared_dir, tmp_path, resume=True, progress=False)
    with pytest.raises(TrainingError, match="another job \\(data .* \\(other prepared data\\)\\)"):
        train(_cfg("epochs=1"), other_prepared, tmp_path, resume=True, progress=False)
    assert (tmp_path / "config.json").read_text() == config  # nothing rewritten
    assert (tmp_path / "metrics.jsonl").read_text() == metrics


def test_a_finished_run_says_so_and_extends_to_more_epochs(prepared_dir: Path, tmp_path: Path, capsys) -> None:
    train(_cfg("epochs=1"), prepared_dir, tmp_path, progress=False)
    capsys.readouterr()
    row = train(_cfg("epochs=1"), prepared_dir, tmp_path, progress=False)
    assert row["epoch"] == 1 and "is finished (1 of 1 epochs)" in capsys.readouterr().out
    row = train(_cfg("epochs=3"), prepared_dir, tmp_path, progress=False)
    assert row["epoch"] == 3
    rows = [json.loads(x) for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in rows] == [1, 2, 3]
    assert json.loads((tmp_path / "config.json").read_text())["epochs"] == 3


def test_damaged_records_and_files_of_the_wrong_kind_are_one_line(synth_dir: Path, prepared_dir: Path, tmp_path: Path,
                                                                   capsys) -> None:
    """A corrupt run.json, a scores file whose score column holds text, a train.csv that is not
    UTF-8: each one line naming the file."""
    import pyarrow as pa

    run = tmp_path / "run"
    train(_cfg("epochs=1"), prepared_dir, run, progress=False)
    (run / "run.json").write_text("{not json")
    _one_line_error(capsys, ["train", "--preset", "demo", "--data", str(prepared_dir), "--out", str(run),
                             *sum((["--set", x] for x in TINY + ["epochs=1"]), [])],
                    str(run / "run.json"), "unreadable")
    ids = pq.read_table(prepared_dir / "metadata.parquet").column("sequence_id")
    scores = tmp_path / "scores.parquet"
    pq.write_table(pa.table({"sequence_id": ids, "score": pa.array(["0.9"] * len(ids))}), scores)
    _one_line_error(capsys, ["train", "--preset", "demo-final", "--data", str(prepared_dir), "--out", str(tmp_path / "f"),
                             "--scores", str(scores)], str(scores), "column score holds string, not numbers")
    data = tmp_path / "latin1"
    shutil.copytree(synth_dir, data)
    text = (data / "train.csv").read_text(encoding="utf-8")
    (data / "train.csv").write_bytes(text.encode("utf-8") + "\n\xe9t\xe9".encode("latin-1"))
    _one_line_error(capsys, ["prepare", str(data), str(tmp_path / "p")], str(data / "train.csv"), "not UTF-8 text")


_LIMITED = """import resource, signal, sys
signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # a write past the limit fails instead of killing
resource.setrlimit(resource.RLIMIT_FSIZE, (int(sys.argv[1]), int(sys.argv[1])))
from aslfr.cli import main
sys.exit(main(sys.argv[2:]))
"""


@pytest.mark.parametrize("command", ["train", "prepare"])
def test_a_write_that_runs_out_of_room_is_one_line_naming_the_file(synth_dir: Path, prepared_dir: Path,
                                                                    tmp_path: Path, command: str) -> None:
    """No room to write (here a file size limit, which fails writes as a full disk does): torch's
    checkpoint writer and numpy's shard writer each fail in their own words; the user gets one
    line naming the file being written, exit status 2, and no file half-written."""
    import subprocess
    import sys

    out = tmp_path / "out"
    if command == "train":
        argv = ["train", "--preset", "demo", "--data", str(prepared_dir), "--out", str(out),
                *sum((["--set", x] for x in TINY + ["epochs=1"]), [])]
        target = ".pt"
    else:
        argv = ["prepare", str(synth_dir), str(out), "--workers", "1"]
        target = ".npy"
    r = subprocess.run([sys.executable, "-c", _LIMITED, str(200_000), *argv], capture_output=True, text=True)
    err = [line for line in r.stderr.splitlines() if "error" in line]
    assert r.returncode == 2 and len(err) == 1 and "Traceback" not in r.stderr, r.stderr
    assert err[0].startswith(f"aslfr {command}: error: {out}") and target in err[0], err[0]
    assert "File too large" in err[0] or "the write failed" in err[0], err[0]
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]  # no temporary left behind
    if command == "train":
        assert not list((out / "checkpoints").glob("*.pt"))


def test_a_finished_run_cannot_be_shortened(prepared_dir: Path, tmp_path: Path) -> None:
    train(_cfg("epochs=2"), prepared_dir, tmp_path, progress=False)
    before = {p.name: p.read_bytes() for p in tmp_path.glob("*.json")}
    with pytest.raises(TrainingError, match=r"holds a run 2 epochs long, more than --set epochs=1"):
        train(_cfg("epochs=1"), prepared_dir, tmp_path, progress=False)
    assert {p.name: p.read_bytes() for p in tmp_path.glob("*.json")} == before  # run.json, config.json untouched


def test_a_second_train_into_a_running_directory_is_refused(prepared_dir: Path, tmp_path: Path) -> None:
    """The run's lock: held by a live process, another train into the same --out is one line and
    writes nothing; released when that process ends."""
    import subprocess
    import sys
    import time

    from aslfr.checkpoints import run_lock

    run = tmp_path / "run"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; from pathlib import Path; "
                               "from aslfr.checkpoints import run_lock\n"
                               "with run_lock(Path(sys.argv[1])):\n    print('held', flush=True); time.sleep(60)",
                               str(run)], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(TrainingError, match=rf"another 'aslfr train' is running in it \(process {holder.pid}\)"):
            train(_cfg("epochs=1"), prepared_dir, run, progress=False)
        assert sorted(p.name for p in run.iterdir()) == [".lock"]
    finally:
        holder.kill()
        holder.wait()
    time.sleep(0.1)
    train(_cfg("epochs=1"), prepared_dir, run, progress=False)  # the system released the dead holder's lock
    assert (run / "checkpoints" / "last.pt").is_file()
    with run_lock(tmp_path / "fresh"):
        pass
    assert not (tmp_path / "fresh").exists()  # a refused or empty run leaves no directory behind


def test_a_cut_off_checkpoint_falls_back_to_the_newest_intact_one(prepared_dir: Path, tmp_path: Path, capsys) -> None:
    cfg = _cfg("epochs=3", "checkpoint_every=1")
    train(cfg, prepared_dir, tmp_path / "full", progress=False)
    run = tmp_path / "cut"
    train(cfg, prepared_dir, run, stop_after_epochs=2, progress=False)
    last = run / "checkpoints" / "last.pt"
    last.write_bytes(last.read_bytes()[:5000])  # cut off mid-write by a crash
    capsys.readouterr()
    train(cfg, prepared_dir, run, progress=False)
    out = capsys.readouterr().out
    assert "last.pt: not a readable aslfr checkpoint" in out and "continuing" in out and "epoch_00002.pt" in out
    a, b = _weights(tmp_path / "full"), _weights(run)
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_load_model_says_which_checkpoint_it_uses_instead(prepared_dir: Path, tmp_path: Path, capsys) -> None:
    train(_cfg("epochs=2", "checkpoint_every=1"), prepared_dir, tmp_path, progress=False)
    last = tmp_path / "checkpoints" / "last.pt"
    last.write_bytes(b"not a checkpoint")
    capsys.readouterr()
    load_model(last)
    err = capsys.readouterr().err
    assert "warning:" in err and str(last) in err and "epoch_00002.pt instead" in err
    assert main(["export", "--checkpoint", str(last), "--out", str(tmp_path / "e0"), "--onnx-only"]) == 0
    used = json.loads((tmp_path / "e0" / "export.json").read_text())["checkpoint"]
    assert used.endswith("epoch_00002.pt")  # the file the model came from, not the damaged last.pt
    capsys.readouterr()
    for p in (tmp_path / "checkpoints").glob("epoch_*.pt"):
        p.unlink()
    _one_line_error(capsys, ["export", "--checkpoint", str(last), "--out", str(tmp_path / "e"), "--onnx-only"],
                    str(last), "not a readable aslfr checkpoint")


def test_a_zero_byte_checkpoint_is_one_line_and_training_passes_over_it(prepared_dir: Path, tmp_path: Path,
                                                                        capsys) -> None:
    empty = tmp_path / "empty.pt"
    empty.write_bytes(b"")
    for argv in (["score", "--checkpoint", str(empty), "--data", str(prepared_dir), "--out", str(tmp_path / "s.parquet")],
                 ["export", "--checkpoint", str(empty), "--out", str(tmp_path / "e"), "--onnx-only"]):
        _one_line_error(capsys, argv, str(empty), "not a readable aslfr checkpoint")
    cfg = _cfg("epochs=2", "checkpoint_every=1")
    run = tmp_path / "run"
    train(cfg, prepared_dir, run, stop_after_epochs=1, progress=False)
    (run / "checkpoints" / "last.pt").write_bytes(b"")  # a crash right after creating it
    capsys.readouterr()
    train(cfg, prepared_dir, run, progress=False)
    out = capsys.readouterr().out
    assert "last.pt: not a readable aslfr checkpoint" in out and "epoch_00001.pt" in out


@pytest.mark.parametrize("setting", ["batch_size=0", "heads=3", "epochs=-1", "lr=nan", "seed=-1", "val_fraction=1.5",
                                     "min_score=inf"])
def test_bad_settings_stop_before_anything_is_written(prepared_dir: Path, tmp_path: Path, capsys, setting: str) -> None:
    _one_line_error(capsys, ["train", "--preset", "demo", "--data", str(prepared_dir), "--out", str(tmp_path / "r"),
                             "--set", setting], setting.split("=")[0])
    assert not (tmp_path / "r").exists()


def test_scores_files_are_checked(prepared_dir: Path, tmp_path: Path, capsys) -> None:
    base = ["train", "--preset", "demo", "--data", str(prepared_dir), "--out", str(tmp_path / "r")]
    _one_line_error(capsys, base + ["--scores", str(tmp_path / "none.parquet")], "none.parquet: scores file not found")
    pq.write_table(pq.read_table(prepared_dir / "metadata.parquet"), tmp_path / "meta.parquet")
    _one_line_error(capsys, base + ["--scores", str(tmp_path / "meta.parquet")], "meta.parquet: no score column")


# --------------------------------------------------------------------------------------------
# exported models, videos, synthesis, the command line
# --------------------------------------------------------------------------------------------

def test_bad_submissions_are_named(synth_dir: Path, tmp_path: Path, capsys) -> None:
    not_zip = tmp_path / "a.zip"
    not_zip.write_text("hello")
    _one_line_error(capsys, ["evaluate", "--submission", str(not_zip), "--data", str(synth_dir)], "a.zip: not a zip file")
    _one_line_error(capsys, ["transcribe", str(synth_dir / "train_landmarks"), "--model", str(not_zip)], "not a zip file")
    corrupt = tmp_path / "b.zip"
    with zipfile.ZipFile(corrupt, "w") as z:
        z.writestr("model.tflite", b"\x00" * 64)
        z.writestr("inference_args.json", json.dumps({"selected_columns": ["x_right_hand_0"]}))
    _one_line_error(capsys, ["evaluate", "--submission", str(corrupt), "--data", str(synth_dir)],
                    "b.zip: model.tflite: not a loadable TFLite model")
    for name, args, says in [
            ("latin1.zip", b'{"selected_columns": ["x_right_hand_0"], "note": "\xe9t\xe9"}',
             "inference_args.json is not UTF-8 text"),
            ("mixed.zip", json.dumps({"selected_columns": ["x_right_hand_0"],
                                      "character_to_prediction_index": {"a": 0, "b": "1"}}).encode(),
             "inference_args.json's character_to_prediction_index: the indices must be the whole numbers 0 to 1")]:
        with zipfile.ZipFile(tmp_path / name, "w") as z:
            z.writestr("model.tflite", b"\x00" * 64)
            z.writestr("inference_args.json", args)
        for argv in (["evaluate", "--submission", str(tmp_path / name), "--data", str(synth_dir)],
                     ["transcribe", str(synth_dir / "train_landmarks"), "--model", str(tmp_path / name)]):
            _one_line_error(capsys, argv, f"{tmp_path / name}: {says}")
    import onnx
    from onnx import TensorProto, helper

    from aslfr.landmarks import SELECTED_COLUMNS

    graph = helper.make_graph([helper.make_node("Identity", ["inputs"], ["outputs"])], "g",
                              [helper.make_tensor_value_info("inputs", TensorProto.FLOAT, ["T", len(SELECTED_COLUMNS)])],
                              [helper.make_tensor_value_info("outputs", TensorProto.FLOAT, ["T", len(SELECTED_COLUMNS)])])
    for name, meta, says in [("junk.onnx", "{not json", "is not valid JSON"),
                             ("mixed.onnx", json.dumps({"a": 0, "b": "1"}), "the indices must be the whole numbers")]:
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = 8
        helper.set_model_props(model, {"character_to_prediction_index": meta})
        onnx.save(model, tmp_path / name)
        _one_line_error(capsys, ["transcribe", str(synth_dir / "train_landmarks"), "--model", str(tmp_path / name)],
                        f"{tmp_path / name}: its metadata character_to_prediction_index", says)
    bad_onnx = tmp_path / "m.onnx"
    bad_onnx.write_bytes(b"junk")
    _one_line_error(capsys, ["transcribe", str(synth_dir / "train_landmarks"), "--model", str(bad_onnx)],
                    "m.onnx: not a loadable ONNX model")


def test_synth_reruns_the_same_dataset_and_refuses_another_in_its_place(tmp_path: Path, capsys) -> None:
    out = tmp_path / "s"
    args = ["synth", str(out), "--sequences", "6", "--participants", "2", "--files", "2", "--seed", "3"]
    assert main(args) == 0
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert main(args) == 0  # the same settings: the same files again
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    capsys.readouterr()
    _one_line_error(capsys, ["synth", str(out), "--sequences", "4", "--participants", "2", "--files", "1", "--seed", "3"],
                    str(out), "holds a synthetic dataset made with other settings", "sequences 6 -> 4", "files 2 -> 1")
    assert {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} == before  # untouched
    (out / "synth.json").unlink()  # now a dataset synth did not make (a real one, say)
    _one_line_error(capsys, args, "already holds a dataset (train.csv, train_landmarks)")


def test_synth_and_show_check_their_arguments(synth_dir: Path, tmp_path: Path, capsys) -> None:
    _one_line_error(capsys, ["synth", str(tmp_path / "s"), "--files", "20", "--sequences", "5"],
                    "--files 20: more files than --sequences 5")
    assert not (tmp_path / "s").exists()
    blocker = tmp_path / "file"
    blocker.write_text("")
    sid = next(csv.DictReader(open(synth_dir / "train.csv")))["sequence_id"]
    _one_line_error(capsys, ["show", "--data", str(synth_dir), "--sequence-id", sid, "--out", str(blocker / "c.gif")],
                    "cannot create its folder")
    _one_line_error(capsys, ["show", "--data", str(tmp_path / "nope"), "--sequence-id", sid, "--out",
                             str(tmp_path / "c.gif")], "nope: data directory not found")
    (tmp_path / "empty").mkdir()
    _one_line_error(capsys, ["show", "--data", str(tmp_path / "empty"), "--sequence-id", sid, "--out",
                             str(tmp_path / "c.gif")], "empty: holds neither train.csv nor supplemental_metadata.csv")
    _one_line_error(capsys, ["show", "--data", str(synth_dir), "--sequence-id", "12", "--out", str(tmp_path / "c.gif")],
                    "sequence_id 12 is not listed in train.csv or supplemental_metadata.csv")


def test_counts_of_workers_are_checked_before_anything_is_written(synth_dir: Path, tmp_path: Path, capsys) -> None:
    for argv in (["prepare", str(synth_dir), str(tmp_path / "p"), "--workers", "0"],
                 ["synth", str(tmp_path / "s"), "--sequences", "4", "--workers", "-2"],
                 ["pipeline", "--data", str(synth_dir), "--out", str(tmp_path / "r"), "--workers", "0"],
                 ["pipeline", "--data", str(synth_dir), "--out", str(tmp_path / "r"), "--folds", "1"]):
        _one_line_error(capsys, argv, f"{argv[-2]} {argv[-1]}: expected")
    assert not list(tmp_path.iterdir())


def test_an_unknown_flag_prints_the_subcommands_usage(capsys) -> None:
    with pytest.raises(SystemExit) as e:
        main(["info", "--bogus"])
    err = capsys.readouterr().err
    assert e.value.code == 2 and "usage: aslfr info" in err and "unrecognized arguments: --bogus" in err


def test_an_output_that_cannot_be_created_is_one_line(tmp_path: Path, capsys) -> None:
    from aslfr.keras_import import import_keras

    ckpt = tmp_path / "seed.pt"
    import_keras(Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "seed_keras_network.h5", ckpt)
    blocker = tmp_path / "file"
    blocker.write_text("")
    _one_line_error(capsys, ["export", "--checkpoint", str(ckpt), "--out", str(blocker / "x"), "--onnx-only"],
                    str(blocker / "x"), "Not a directory")
