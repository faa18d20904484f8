import json
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from conftest import TINY

from aslfr.cli import main
from aslfr.data.shards import ShardDataset
from aslfr.pipeline import Pipeline, PipelineSettings
from aslfr.report import read_corruptions

SETTINGS = [s for s in TINY if not s.startswith("epochs")] + ["epochs=2", "val_fraction=0.25"]


def _run(synth_dir: Path, out: Path, *extra: str) -> int:
    args = ["pipeline", "--data", str(synth_dir), "--out", str(out), "--preset", "demo", "--no-export", "--workers", "1"]
    for s in SETTINGS:
        args += ["--set", s]
    return main(args + list(extra))


def test_pipeline_runs_every_stage_then_skips_what_is_up_to_date(synth_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    # a few steps do not make a model that scores samples above 0.2: keep every sample
    assert _run(synth_dir, out, "--min-score", "-50") == 0
    summary = json.loads((out / "summary.json").read_text())
    c = summary["counts"]
    assert c["sequences"] == 80 and c["validation"] + c["training_candidates"] == 80  # train.csv only
    planted = read_corruptions(synth_dir)
    assert 0 < c["planted_corrupt"] == len(planted)  # round(0.25 * 80) minus rounding of the kinds
    assert set(summary["validation_scores"]) >= {"base", "final", "control", "baseline (nearest template)"}
    assert {"length", "score > -50"} <= set(summary["filters"])
    assert set(summary["filters"]["length"]["kinds"]) == {"no_hand", "wrong_phrase"}
    assert all(summary["stage_seconds"][s] > 0 for s in ("prepare", "base", "score", "final", "control"))
    report = (out / "report.md").read_text()
    assert "report_scores.png" in report and "base/curves.png" in report and "Worst-scored" in report
    assert (out / "report_scores.png").is_file()
    assert len(summary["worst_clips"]) == 3 and all((out / c).stat().st_size > 0 for c in summary["worst_clips"])
    assert summary["worst_clips"][0] in report
    capsys.readouterr()

    before = {p: p.stat().st_mtime_ns for p in (out / "base" / "checkpoints").iterdir()}
    assert _run(synth_dir, out, "--min-score", "-50") == 0
    log = capsys.readouterr().out
    assert log.count("up to date, skipped") == len(["prepare", "base", "score", "final", "control", "export",
                                                   "evaluate", "report"])
    assert before == {p: p.stat().st_mtime_ns for p in (out / "base" / "checkpoints").iterdir()}

    # a new threshold re-runs the final model and what follows, not the base model or the scores
    assert _run(synth_dir, out, "--min-score", "-40") == 0
    log = capsys.readouterr().out
    for stage in ("prepare", "base", "score", "control"):
        assert f"[{stage}] up to date" in log
    assert "[final] running" in log and "[report] running" in log
    assert json.loads((out / "summary.json").read_text())["min_score"] == -40


def test_interrupted_training_stage_continues_from_its_checkpoint(synth_dir: Path, tmp_path: Path, capsys) -> None:
    out = tmp_path / "run"
    assert _run(synth_dir, out, "--to", "base") == 0
    # simulate an interruption inside `score`: a started marker without a finished record
    p = Pipeline(PipelineSettings(synth_dir, out, overrides=SETTINGS, export=False, progress=False))
    (out / "stages" / "score.started").write_text(p.fingerprint("score"))
    capsys.readouterr()
    assert _run(synth_dir, out, "--to", "score") == 0
    assert "[score] continuing" in capsys.readouterr().out


def test_out_of_fold_scores_each_sample_with_the_model_that_never_saw_it(synth_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "run"
    assert _run(synth_dir, out, "--folds", "2", "--to", "score") == 0
    ds = ShardDataset(out / "prepared")
    oof = pq.read_table(out / "scores.parquet").to_pydict()
    ins = pq.read_table(out / "scores_in_sample.parquet").to_pydict()
    assert sorted(oof["sequence_id"]) == sorted(ds.meta["sequence_id"].tolist()) == sorted(ins["sequence_id"])
    for k in (0, 1):
        split = json.loads((out / "base" / f"fold_{k}" / "split.json").read_text())
        assert split["val"] > 0
        fold_scores = pq.read_table(out / "base" / f"scores_oof_{k}.parquet").to_pydict()
        assert len(fold_scores["sequence_id"]) == split["val"]
    people = [set(pq.read_table(out / "base" / f"scores_oof_{k}.parquet").column("participant_id").to_pylist())
              for k in (0, 1)]
    assert not people[0] & people[1] and people[0] | people[1] == set(np.unique(ds.meta["participant_id"]).tolist())


def test_pipeline_rejects_unknown_stage_and_preset(synth_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="pipeline preset"):
        Pipeline(PipelineSettings(synth_dir, tmp_path, preset="nope"))
    assert main(["pipeline", "--data", str(tmp_path / "missing"), "--out", str(tmp_path / "o"), "--no-export"]) == 2
    assert main(["pipeline", "--data", str(synth_dir), "--out", str(tmp_path / "z"), "--preset", "demo",
                 "--set", "epochs=0"]) == 2
    assert not (tmp_path / "z").exists()  # refused before prepare wrote anything
    with pytest.raises(ValueError, match="--from report comes after --to base"):
        Pipeline(PipelineSettings(synth_dir, tmp_path / "p", preset="demo")).run("report", "base")
    assert not (tmp_path / "p" / "stages").exists()


def test_jobs_2_trains_control_in_its_own_process_with_the_same_result(synth_dir: Path, tmp_path: Path,
                                                                        capsys) -> None:
    def losses(run: Path) -> list[float]:
        return [json.loads(line)["loss"] for line in (run / "metrics.jsonl").read_text().splitlines()]

    assert _run(synth_dir, tmp_path / "one", "--to", "control", "--min-score", "-50") == 0
    capsys.readouterr()
    assert _run(synth_dir, tmp_path / "two", "--to", "control", "--jobs", "2", "--min-score", "-50") == 0
    log = capsys.readouterr().out
    assert "[control] started in its own process" in log and "[control] done alongside" in log
    assert "[control] done in" in (tmp_path / "two" / "control.log").read_text()
    for stage in ("base", "control"):  # one thread instead of the default: the same up to rounding
        assert np.allclose(losses(tmp_path / "one" / stage), losses(tmp_path / "two" / stage), rtol=1e-4)
    # up to date afterwards: nothing is started again
    assert _run(synth_dir, tmp_path / "two", "--to", "control", "--jobs", "2", "--min-score", "-50") == 0
    assert capsys.readouterr().out.count("up to date, skipped") == 5
