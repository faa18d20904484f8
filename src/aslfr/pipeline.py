"""The seed's data-cleaning idea end to end, as one resumable command.

    prepare -> base -> score -> final -> control -> export -> evaluate -> report

- `base` trains the base model (or, with `folds` K > 1, K models on participant folds);
- `score` scores every sample with it (out of fold: with the model that never saw it);
- `final` trains the final model on the samples whose score is above `min_score`;
- `control` trains the same final model on the length filter alone, to show what scoring buys;
- `export` writes the on-device model, `evaluate` runs it as Kaggle does;
- `report` writes `summary.json` and `report.md`.

With `jobs` 2, `control` (which needs only the prepared data) trains in a second process at the
same time as `base -> score -> final`, each training on one thread: on a 2-core CPU the two
single-threaded demo trainings make 5.2 steps/s each, 1.3x the 8.1 steps/s of one two-threaded
training, whose small matmuls do not split well over threads. Its log goes to RUN_DIR/control.log.

Every stage writes into RUN_DIR and leaves a record `RUN_DIR/stages/<stage>.json` holding a
fingerprint of its settings and of the stages it reads. A stage whose record matches is skipped;
a stage that was cut off continues (training resumes from its last checkpoint); a stage whose
settings changed starts again, and so does everything after it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import multiprocessing
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np

from aslfr.config import Config, preset
from aslfr.files import write_json
from aslfr.vocab import CharacterMap

STAGES = ["prepare", "base", "score", "final", "control", "export", "evaluate", "report"]
PIPELINE_PRESETS = {"demo": ("demo-base", "demo-final"), "seed": ("seed-base", "seed-final"),
                    # the 2nd place's recipe as both models (it has no base model of its own)
                    "second-place": ("second-place", "second-place"),
                    "second-place-demo": ("second-place-demo", "second-place-demo")}


@dataclass
class PipelineSettings:
    data: Path
    out: Path
    preset: str = "demo"
    folds: int = 0
    min_score: float | None = None
    overrides: list[str] = field(default_factory=list)        # --set, both models
    workers: int = 2
    export: bool = True
    evaluate_limit: int | None = 300    # sequences of train.csv run through the TFLite model
    progress: bool = True
    jobs: int = 1                       # 2: train `control` alongside base, score and final

    def charmap(self) -> CharacterMap:
        """The dataset's own character map (its character_to_prediction_index.json), else the
        competition's."""
        from aslfr.data.kaggle import dataset_charmap

        return dataset_charmap(self.data)

    def configs(self) -> tuple[Config, Config]:
        if self.preset not in PIPELINE_PRESETS:
            raise ValueError(f"pipeline preset {self.preset!r}: expected one of {', '.join(PIPELINE_PRESETS)}")
        base_name, final_name = PIPELINE_PRESETS[self.preset]
        charmap = self.charmap()
        base = preset(base_name).override(self.overrides).with_charmap(charmap)
        final = preset(final_name).override(self.overrides + ["train_filter=score"]).with_charmap(charmap)
        if self.min_score is not None:
            final = final.override([f"min_score={self.min_score}"])
        return base, final


class Pipeline:
    def __init__(self, s: PipelineSettings) -> None:
        self.s = s
        self.out = Path(s.out)
        self.base_cfg, self.final_cfg = s.configs()
        # the final model without the score filter: its settings do not depend on min_score
        unfiltered = preset(PIPELINE_PRESETS[s.preset][1]).override(s.overrides)
        own_filter = "frames" if unfiltered.network == "ctc-attention" else "length"  # the family's own filter
        self.control_cfg = unfiltered.override([f"train_filter={own_filter}"]).with_charmap(s.charmap())
        for cfg in (self.base_cfg, self.final_cfg, self.control_cfg):  # before any stage writes anything
            cfg.check()
        if s.folds < 0 or s.folds == 1:
            raise ValueError(f"--folds {s.folds}: expected 0 (no folds) or 2 or more")
        if s.workers < 1:
            raise ValueError(f"--workers {s.workers}: expected a whole number of prepare processes, at least 1")
        self.records = self.out / "stages"
        self.fingerprints: dict[str, str] = {}

    @property
    def landmarks(self) -> str:
        """Which landmarks the prepared data keeps: every one for the 2nd place's network."""
        return "all" if self.base_cfg.network == "ctc-attention" else "seed"

    # ---- paths ----
    @property
    def prepared(self) -> Path:
        return self.out / "prepared"

    @property
    def scores_path(self) -> Path:
        return self.out / "scores.parquet"

    def base_runs(self) -> list[Path]:
        if self.s.folds > 1:
            return [self.out / "base" / f"fold_{k}" for k in range(self.s.folds)]
        return [self.out / "base"]

    # ---- stage bookkeeping ----
    def _settings(self, stage: str) -> dict:
        if stage == "prepare":  # (the landmarks only where they are not the seed's: earlier runs stay valid)
            return {"data": _tree_signature(Path(self.s.data)),
                    **({"landmarks": self.landmarks} if self.landmarks != "seed" else {})}
        if stage == "base":
            return {"config": self.base_cfg.to_dict(), "folds": self.s.folds}
        if stage == "score":
            return {"folds": self.s.folds}
        if stage == "final":
            return {"config": self.final_cfg.to_dict()}
        if stage == "control":
            return {"config": self.control_cfg.to_dict()}
        if stage == "export":
            return {"enabled": self.s.export}
        if stage == "evaluate":
            return {"enabled": self.s.export, "limit": self.s.evaluate_limit}
        return {"version": 2}

    _UPSTREAM = {"prepare": [], "base": ["prepare"], "score": ["base"], "final": ["score"],
                 "control": ["prepare"], "export": ["final"], "evaluate": ["export"],
                 "report": ["score", "final", "control", "evaluate"]}

    def fingerprint(self, stage: str) -> str:
        if stage not in self.fingerprints:
            payload = {"stage": stage, "settings": self._settings(stage),
                       "upstream": [self.fingerprint(u) for u in self._UPSTREAM[stage]]}
            self.fingerprints[stage] = hashlib.sha256(json.dumps(payload, sort_keys=True, default=str).encode()).hexdigest()[:16]
        return self.fingerprints[stage]

    def record(self, stage: str) -> dict | None:
        path = self.records / f"{stage}.json"
        return json.loads(path.read_text()) if path.is_file() else None

    def is_done(self, stage: str) -> bool:
        rec = self.record(stage)
        return rec is not None and rec.get("fingerprint") == self.fingerprint(stage)

    def run(self, start: str | None = None, stop: str | None = None, log: Callable[[str], None] = print) -> dict:
        for name in (start, stop):
            if name is not None and name not in STAGES:
                raise ValueError(f"unknown stage {name!r}; stages: {', '.join(STAGES)}")
        if self.s.jobs < 1:
            raise ValueError(f"jobs must be at least 1, not {self.s.jobs}")
        first = STAGES.index(start) if start else 0
        last = STAGES.index(stop) if stop else len(STAGES) - 1
        if first > last:
            raise ValueError(f"--from {STAGES[first]} comes after --to {STAGES[last]}: the stages run in the order "
                             f"{' -> '.join(STAGES)}")
        self.records.mkdir(parents=True, exist_ok=True)
        selected = STAGES[first:last + 1]
        background: multiprocessing.Process | None = None
        threads = None
        try:
            for stage in selected:
                forced = start is not None
                if (stage == "base" and self.s.jobs > 1 and "control" in selected
                        and (forced or not self.is_done("control"))):
                    background = self._start_in_background("control", forced, log)
                    threads = _set_threads(1)
                if stage == "control" and background is not None:
                    background.join()
                    _set_threads(threads)
                    threads = None
                    if background.exitcode != 0:
                        raise RuntimeError(f"[control] failed in its own process (exit {background.exitcode}); "
                                           f"see {self.out / 'control.log'}")
                    background = None
                    log(f"[control] done alongside the others in {self.record('control')['seconds']:.1f} s "
                        f"(log: {self.out / 'control.log'})")
                    continue
                self.run_stage(stage, forced, log)
        finally:
            if background is not None and background.is_alive():
                background.terminate()  # it resumes from its last checkpoint next time
                background.join()
            if threads is not None:
                _set_threads(threads)
        summary_path = self.out / "summary.json"
        return json.loads(summary_path.read_text()) if summary_path.is_file() else {}

    def run_stage(self, stage: str, forced: bool = False, log: Callable[[str], None] = print) -> None:
        """Run one stage unless its record is up to date (or `forced`); continue it if it was
        cut off with the same fingerprint."""
        if self.is_done(stage) and not forced:
            log(f"[{stage}] up to date, skipped")
            return
        started = self.records / f"{stage}.started"
        resume = started.is_file() and started.read_text() == self.fingerprint(stage) and not forced
        if not resume:
            (self.records / f"{stage}.json").unlink(missing_ok=True)
            started.write_text(self.fingerprint(stage))
        log(f"[{stage}] {'continuing' if resume else 'running'}")
        t0 = time.time()
        result = getattr(self, f"_stage_{stage}")(resume)
        seconds = round(time.time() - t0, 2)
        write_json(self.records / f"{stage}.json",
                   {"fingerprint": self.fingerprint(stage), "seconds": seconds, "result": result})
        started.unlink(missing_ok=True)
        log(f"[{stage}] done in {seconds:.1f} s")

    def _start_in_background(self, stage: str, forced: bool, log: Callable[[str], None]) -> multiprocessing.Process:
        log(f"[{stage}] started in its own process, one thread (log: {self.out / f'{stage}.log'})")
        proc = multiprocessing.get_context("spawn").Process(
            target=_run_stage_alone, args=(self.s, stage, forced, self.out / f"{stage}.log"), name=f"aslfr-{stage}")
        proc.start()
        return proc

    # ---- stages ----
    def _stage_prepare(self, resume: bool) -> dict:
        from aslfr.data.prepare import prepare

        if not resume and self.prepared.exists():
            shutil.rmtree(self.prepared)
        return prepare(self.s.data, self.prepared, workers=self.s.workers, characters=self.s.charmap(),
                       landmarks=self.landmarks)

    def _train(self, cfg: Config, run: Path, resume: bool, scores: Path | None = None) -> dict:
        from aslfr.train import train

        if not resume and run.exists():
            shutil.rmtree(run)
        return train(cfg, self.prepared, run, resume=resume, scores=scores, progress=self.s.progress)

    def _stage_base(self, resume: bool) -> dict:
        runs = self.base_runs()
        if len(runs) == 1:
            return self._train(self.base_cfg, runs[0], resume)
        rows = {}
        for k, run in enumerate(runs):
            cfg = self.base_cfg.override([f"folds={self.s.folds}", f"fold={k}", "split=participant"])
            done = (run / "done.json").is_file()
            rows[f"fold_{k}"] = (json.loads((run / "done.json").read_text()) if done and resume
                                 else self._train(cfg, run, resume))
            write_json(run / "done.json", rows[f"fold_{k}"])
        return rows

    def _stage_score(self, resume: bool) -> dict:
        from aslfr.data.shards import ShardDataset
        from aslfr.score import merge_out_of_fold, score
        from aslfr.data.loader import validation_mask

        runs = self.base_runs()
        if len(runs) == 1:
            return score(runs[0] / "checkpoints" / "last.pt", self.prepared, self.scores_path,
                         progress=self.s.progress)
        # Each sample is scored out of fold, by the model that never saw it, and, to measure what
        # that buys, in sample, by the next fold's model, which trained on it (the seed's way).
        ds = ShardDataset(self.prepared)
        parts: dict[str, list[Path]] = {"oof": [], "in_sample": []}
        for k in range(len(runs)):
            cfg = self.base_cfg.override([f"folds={self.s.folds}", f"fold={k}", "split=participant"])
            held_out = np.flatnonzero(validation_mask(ds, cfg))
            for kind, model_run in (("oof", runs[k]), ("in_sample", runs[(k + 1) % len(runs)])):
                part = self.out / "base" / f"scores_{kind}_{k}.parquet"
                if not (resume and part.is_file()):
                    score(model_run / "checkpoints" / "last.pt", self.prepared, part, indices=held_out,
                          progress=self.s.progress)
                parts[kind].append(part)
        merge_out_of_fold(parts["in_sample"], self.out / "scores_in_sample.parquet")
        return merge_out_of_fold(parts["oof"], self.scores_path)

    def _stage_final(self, resume: bool) -> dict:
        return self._train(self.final_cfg, self.out / "final", resume, scores=self.scores_path)

    def _stage_control(self, resume: bool) -> dict:
        return self._train(self.control_cfg, self.out / "control", resume)

    def _stage_export(self, resume: bool) -> dict:
        if not self.s.export:
            return {"skipped": "export disabled"}
        from aslfr.export import export

        return export(self.out / "final" / "checkpoints" / "last.pt", self.out / "export")

    def _stage_evaluate(self, resume: bool) -> dict:
        if not self.s.export:
            return {"skipped": "export disabled"}
        from aslfr.evaluate import evaluate_in_runtime
        from aslfr.export import converter_python

        runtimes = ["litert"] + (["tflite-runtime"] if converter_python().is_file() else [])
        result = {r: evaluate_in_runtime(self.out / "export" / "submission.zip", Path(self.s.data),
                                         self.s.evaluate_limit, r) for r in runtimes}
        write_json(self.out / "evaluate.json", result)
        return result

    def _stage_report(self, resume: bool) -> dict:
        from aslfr.report import write_report

        return write_report(self)


def _set_threads(n: int | None) -> int | None:
    """Set torch's intra-op threads; returns the previous count."""
    import torch

    previous = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    return previous


def _run_stage_alone(settings: PipelineSettings, stage: str, forced: bool, log_path: Path) -> None:
    """One stage in a process of its own, on one thread, its output in `log_path`."""
    with open(log_path, "a", buffering=1) as f:
        os.dup2(f.fileno(), 1)
        os.dup2(f.fileno(), 2)
        sys.stdout = sys.stderr = f
        _set_threads(1)
        Pipeline(dataclasses.replace(settings, progress=False)).run_stage(stage, forced, log=print)


def _tree_signature(root: Path) -> list:
    """Names, sizes and modification times of the input files: a change to any re-runs prepare."""
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    return sorted([str(p.relative_to(root)), p.stat().st_size, int(p.stat().st_mtime)]
                  for p in root.rglob("*") if p.is_file())
