"""The pipeline's `summary.json` and `report.md`: counts at each filter, validation scores, stage
times, and, on synthetic data, how well each filter finds the planted corrupt samples."""

from __future__ import annotations

import csv
import json
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from aslfr.config import Config
from aslfr.data.shards import ShardDataset
from aslfr.files import atomic_write, write_json
from aslfr.metric import competition_score


class PipelineRun(Protocol):
    """What the report reads of a pipeline run (`aslfr.pipeline.Pipeline` is one): the report
    depends on these, not on the pipeline module, so imports run one way."""
    s: Any              # the run's settings (PipelineSettings)
    out: Path
    base_cfg: Config
    final_cfg: Config

    @property
    def prepared(self) -> Path: ...

    @property
    def scores_path(self) -> Path: ...

    def record(self, stage: str) -> dict | None: ...


def read_corruptions(data_dir: Path) -> dict[int, str]:
    """sequence_id -> planted kind, from a synthetic dataset's corruptions.csv ({} for real data)."""
    path = Path(data_dir) / "corruptions.csv"
    if not path.is_file():
        return {}
    with open(path, newline="") as f:
        return {int(r["sequence_id"]): r["kind"] for r in csv.DictReader(f)}


def detection(dropped: np.ndarray, kinds: np.ndarray) -> dict:
    """How a filter that drops `dropped` finds planted samples (`kinds`: '' for clean).

    precision: share of the dropped samples that are planted (any kind); per kind, recall is the
    share of that kind dropped, and precision counts only that kind and the clean samples."""
    planted = kinds != ""
    out = {"dropped": int(dropped.sum()),
           "precision": float((dropped & planted).sum() / dropped.sum()) if dropped.any() else float("nan"),
           "recall": float((dropped & planted).sum() / planted.sum()) if planted.any() else float("nan"),
           "kinds": {}}
    for kind in sorted(set(kinds[planted])):
        mine = kinds == kind
        hits = int((dropped & mine).sum())
        rivals = int((dropped & ~planted).sum())
        out["kinds"][kind] = {"planted": int(mine.sum()), "found": hits,
                              "recall": hits / int(mine.sum()),
                              "precision": hits / (hits + rivals) if hits + rivals else float("nan")}
    return out


def _val_scores(preds: list[str], targets: list[str], length_ok: np.ndarray, clean: np.ndarray) -> dict:
    def sc(mask: np.ndarray) -> float:
        return competition_score([p for p, m in zip(preds, mask) if m], [t for t, m in zip(targets, mask) if m]) \
            if mask.any() else float("nan")
    everything = np.ones(len(preds), dtype=bool)
    return {"unfiltered": sc(everything), "length_filtered": sc(length_ok), "clean": sc(clean)}


def write_report(p: PipelineRun) -> dict:
    from aslfr.baseline import baseline_score
    from aslfr.score import plot_histogram, read_score_table
    from aslfr.checkpoints import load_model
    from aslfr.data.loader import passes_length_filter, select_samples
    from aslfr.score import model_samples, predictions

    ds = ShardDataset(p.prepared)
    planted_by_id = read_corruptions(Path(p.s.data))
    ids = ds.meta["sequence_id"]
    kinds = np.array([planted_by_id.get(int(s), "") for s in ids])
    is_train_source = ds.meta["source"] == "train"
    length_ok = passes_length_filter(ds)
    scores = read_score_table(p.scores_path)
    by_id = dict(zip(scores["sequence_id"].tolist(), range(len(scores["sequence_id"]))))
    score_of = np.array([scores["score"][by_id[int(s)]] for s in ids])
    min_score = p.final_cfg.min_score
    score_ok = score_of > min_score

    # the final run's split (base and final share the split settings; folds only change base)
    split = select_samples(ds, p.final_cfg, p.scores_path)
    val = split["val"]
    candidates = np.setdiff1d(np.arange(len(ds)), val)
    counts = {"sequences": len(ds), "validation": len(val), "training_candidates": len(candidates),
              "length_filter_kept": int(length_ok[candidates].sum()),
              "score_filter_kept": int(score_ok[candidates].sum()),
              "both_filters_kept": int((length_ok & score_ok)[candidates].sum()),
              "planted_corrupt": int((kinds != "").sum())}

    targets = [ds.phrases[i] for i in val]
    clean_val = kinds[val] == ""
    models = {"base": _val_scores([scores["prediction"][by_id[int(ids[i])]] for i in val], targets,
                                  length_ok[val], clean_val)}
    for name in ("final", "control"):
        ckpt = p.out / name / "checkpoints" / "last.pt"
        if ckpt.is_file():
            model, cfg, stats = load_model(ckpt)
            texts = predictions(model, cfg, model_samples(p.prepared, cfg, stats), val)
            models[name] = _val_scores(texts, targets, length_ok[val], clean_val)
    base_split = select_samples(ds, p.base_cfg, None)
    models["baseline (nearest template)"] = {
        "unfiltered": baseline_score(ds, base_split["train"], val)["baseline_val_score"]}

    population = is_train_source
    filters = {"length": detection(~length_ok[population], kinds[population]),
               f"score > {min_score:g}": detection(~score_ok[population], kinds[population])}
    if (p.out / "scores_in_sample.parquet").is_file():
        ins = read_score_table(p.out / "scores_in_sample.parquet")
        ins_by_id = dict(zip(ins["sequence_id"].tolist(), ins["score"].tolist()))
        in_sample_ok = np.array([ins_by_id[int(s)] for s in ids]) > min_score
        filters[f"in-sample score > {min_score:g}"] = detection(~in_sample_ok[population], kinds[population])

    stage_seconds = {s: (p.record(s) or {}).get("seconds") for s in
                     ["prepare", "base", "score", "final", "control", "export", "evaluate"]}
    evaluation = json.loads((p.out / "evaluate.json").read_text()) if (p.out / "evaluate.json").is_file() else None
    order = np.argsort(score_of[population], kind="stable")[:12]
    pop_idx = np.flatnonzero(population)[order]
    worst = [{"sequence_id": int(ids[i]), "participant_id": int(ds.meta["participant_id"][i]),
              "phrase": ds.phrases[i], "prediction": scores["prediction"][by_id[int(ids[i])]],
              "score": float(score_of[i]), "planted": kinds[i] or "-"} for i in pop_idx]

    clips = _worst_clips(p, worst[:3])
    summary = {"preset": p.s.preset, "folds": p.s.folds, "min_score": min_score, "counts": counts,
               "validation_scores": models, "filters": filters, "stage_seconds": stage_seconds,
               "evaluation": evaluation, "worst_scored": worst, "worst_clips": clips}
    write_json(p.out / "summary.json", summary)
    plot_histogram(score_of[population], p.out / "report_scores.png", threshold=min_score,
                   title="base model's per-sample scores" + (" (out of fold)" if p.s.folds > 1 else ""))
    atomic_write(p.out / "report.md", lambda tmp: Path(tmp).write_text(_markdown(summary, p)))
    return {"summary": str(p.out / "summary.json"), "report": str(p.out / "report.md")}


def _worst_clips(p: PipelineRun, worst: list[dict]) -> list[str]:
    """GIFs of the worst-scored samples (aslfr show), with the exported model's prediction when
    there is one; relative to the run directory."""
    from aslfr.video import show

    model = p.out / "export" / "submission.zip"
    clips = []
    for w in worst:
        name = f"worst_{w['sequence_id']}.gif"
        show(p.s.data, w["sequence_id"], p.out / "clips" / name, model=model if model.is_file() else None, every=3)
        clips.append(f"clips/{name}")
    return clips


def _f(x: object) -> str:
    return f"{x:.3f}" if isinstance(x, float) else ("-" if x is None else str(x))


def _markdown(s: dict, p: PipelineRun) -> str:
    lines = [f"# aslfr pipeline report: preset `{s['preset']}`", ""]
    scoring = f"out of fold ({s['folds']} participant folds)" if s["folds"] > 1 else "in sample (the seed's way)"
    lines += [f"Samples scored {scoring}; the final model keeps samples with score > {s['min_score']:g}.", ""]
    lines += ["## Validation scores (held-out data)", "",
              "| model | unfiltered | length-filtered | clean (no planted corruption) |", "|---|---|---|---|"]
    for name, v in s["validation_scores"].items():
        lines.append(f"| {name} | {_f(v.get('unfiltered'))} | {_f(v.get('length_filtered'))} | {_f(v.get('clean'))} |")
    lines += ["", "`final` trains on the score filter; `control` is the same model on the length filter alone.", ""]
    lines += ["## Sample counts", "", "| | count |", "|---|---|"]
    lines += [f"| {k.replace('_', ' ')} | {v} |" for k, v in s["counts"].items()]
    lines += ["", "## Filters against the planted corrupt samples", ""]
    if s["counts"]["planted_corrupt"]:
        lines += ["| filter | dropped | precision | recall | per kind: found / planted (recall, precision) |",
                  "|---|---|---|---|---|"]
        for name, d in s["filters"].items():
            per = "; ".join(f"{k}: {v['found']}/{v['planted']} ({v['recall']:.2f}, {_f(v['precision'])})"
                            for k, v in d["kinds"].items())
            lines.append(f"| {name} | {d['dropped']} | {_f(d['precision'])} | {_f(d['recall'])} | {per} |")
    else:
        lines.append("No corruptions.csv in the data (real data): nothing planted to find.")
    lines += ["", "![score histogram](report_scores.png)", "", "## Training curves", ""]
    for name in ("base", "final", "control"):
        run = p.out / name
        for png in sorted(run.rglob("curves.png")):
            lines += [f"{png.parent.relative_to(p.out)}:", "", f"![{name} curves]({png.relative_to(p.out)})", ""]
    lines += ["## Worst-scored samples", "", "| sequence_id | participant | phrase | prediction | score | planted |",
              "|---|---|---|---|---|---|"]
    for w in s["worst_scored"]:
        lines.append(f"| {w['sequence_id']} | {w['participant_id']} | `{w['phrase']}` | `{w['prediction']}` | "
                     f"{w['score']:.2f} | {w['planted']} |")
    for clip in s.get("worst_clips", []):
        lines += ["", f"![{clip}]({clip})"]
    lines += ["", "## Stage wall times (s)", "", "| stage | seconds |", "|---|---|"]
    lines += [f"| {k} | {_f(v)} |" for k, v in s["stage_seconds"].items()]
    if s.get("evaluation"):
        e = s["evaluation"]
        lines += ["", "## On-device model (Kaggle-style evaluation)", "", "```", json.dumps(e, indent=2), "```"]
    return "\n".join(lines) + "\n"
