"""Per-sample scores (SEED-SPEC 7.2): predict every prepared sequence and compare with its phrase.

`score` runs one checkpoint over every sequence, whatever its split and whether or not the
length filter drops it. `merge_out_of_fold` combines the scores of K fold models, each sample
taking the score of the model that never trained on it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import torch
from tqdm import tqdm

from aslfr.data.loader import Samples, collate
from aslfr.data.shards import ShardDataset
from aslfr.files import atomic_write, check_output_file, write_table
from aslfr.metric import sample_score

SCORE_COLUMNS = ("sequence_id", "participant_id", "file_id", "prediction", "phrase", "score")


def score(checkpoint: str | Path, data: str | Path, out: str | Path, batch_size: int = 64,
          indices: np.ndarray | None = None, device: str | None = None, progress: bool = True,
          bf16: str | None = None) -> dict:
    """Write `out` (parquet, one row per sequence, keyed by sequence_id) and a histogram next to
    it (`<out>.png`); returns a short summary.

    `bf16` (true, false, auto; default: the checkpoint's own `bf16` setting, so a model scores
    in the precision it trained in): bf16 autocast for the predictions. Inference at the demo's
    and the seed's shapes measured 1.4-1.7x faster under bf16 autocast than in float32 on a CPU
    with AVX512_BF16 (`benchmarks/predict.py`), so `auto` turns it on where the hardware has it."""
    from aslfr.checkpoints import load_model
    from aslfr.hardware import bf16_enabled

    if not (isinstance(batch_size, int) and batch_size >= 1):
        raise ValueError(f"--batch-size {batch_size}: expected a whole number of sequences, at least 1")
    out = Path(out)
    check_output_file(out)  # found now, not after predicting every sequence

    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    model, cfg, stats = load_model(Path(checkpoint), device)
    setting = cfg.bf16 if bf16 is None else bf16
    if setting not in ("true", "false", "auto"):
        raise ValueError(f"--bf16 {setting}: expected true, false or auto")
    use_bf16 = bf16_enabled(setting, device)
    samples = model_samples(Path(data), cfg, stats)
    ds = samples.ds
    if ds.charmap != cfg.charmap:
        raise ValueError(f"{checkpoint}: its character map ({len(cfg.charmap)} characters) is not the one "
                         f"{data} was prepared with ({len(ds.charmap)}); score data prepared with the model's map")
    idx = np.arange(len(ds)) if indices is None else np.asarray(indices)
    preds = predictions(model, cfg, samples, idx, batch_size=batch_size, device=device, progress=progress,
                        bf16=use_bf16)
    table = score_table(ds, idx, preds)
    write_table(out, table)
    plot_histogram(table["score"], histogram_path(out))
    return {"sequences": len(idx), "mean_score": float(np.mean(table["score"])) if len(idx) else float("nan"),
            "precision": "bf16 autocast" if use_bf16 else "float32"}


def model_samples(data: Path, cfg, stats):  # noqa: ANN001, ANN201 - a Config; a Samples or JointSamples
    """A model's view of a prepared directory, unaugmented: the seed's features normalised with
    the checkpoint's statistics, or the 2nd place's per-sample features."""
    if cfg.network == "ctc-attention":
        from aslfr.joint_training import JointSamples

        return JointSamples(Path(data), cfg, train=False)
    return Samples(Path(data), cfg, train=False, stats=stats)  # normalised as in training


def predictions(model: torch.nn.Module, cfg, samples, indices: np.ndarray, batch_size: int = 64,  # noqa: ANN001
                device: str = "cpu", progress: bool = False, bf16: bool = False) -> list[str]:
    """Any network family's texts for `indices` of `samples` (from `model_samples`): the seed's
    batched greedy CTC, or the 2nd place's model decoded sequence by sequence with its own
    `decoding` setting."""
    if cfg.network == "ctc-attention":
        from aslfr.joint_training import predict as decode_all

        return decode_all([model], samples, indices, cfg, progress=progress, bf16=bf16)
    return predict(model, samples, indices, batch_size=batch_size, device=device, progress=progress, bf16=bf16)


@torch.no_grad()
def predict(model: torch.nn.Module, samples: Samples, indices: np.ndarray, batch_size: int = 64,
            device: str = "cpu", progress: bool = False, bf16: bool = False) -> list[str]:
    """Greedy CTC predictions of `indices` (in that order), decoding each up to its real length;
    under bf16 autocast with `bf16` (training's validation stays float32, the exported model's
    precision)."""
    model.eval()
    order = np.argsort([int(samples.ds.meta["n_frames"][i]) for i in indices])
    out: list[str] = [""] * len(indices)
    for s in tqdm(range(0, len(order), batch_size), desc="predict", disable=not progress, leave=False):
        chunk = order[s:s + batch_size]
        batch = collate([samples[(0, int(indices[k]))] for k in chunk], None, samples.charmap.blank)
        with torch.autocast(device.split(":")[0], dtype=torch.bfloat16, enabled=bf16):
            logits = model(batch["features"].to(device), batch["lengths"].to(device))
        best = logits.float().argmax(-1).cpu().numpy()
        for k, row, n in zip(chunk, best, batch["lengths"].tolist()):
            out[k] = samples.charmap.ctc_greedy(row[:n])
    return out


def score_table(ds: ShardDataset, idx: np.ndarray, preds: list[str]) -> dict[str, np.ndarray | list]:
    phrases = [ds.phrases[i] for i in idx]
    return {"sequence_id": ds.meta["sequence_id"][idx].astype(np.int64),
            "participant_id": ds.meta["participant_id"][idx].astype(np.int64),
            "file_id": ds.meta["file_id"][idx].astype(np.int64),
            "prediction": list(preds), "phrase": phrases,
            "score": np.array([sample_score(p, t) for p, t in zip(preds, phrases)], dtype=np.float64)}


def read_score_table(path: str | Path) -> dict[str, np.ndarray | list]:
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path}: not found; write it with 'aslfr score'")
    table = pq.read_table(path)
    missing = [c for c in SCORE_COLUMNS if c not in table.column_names]
    if missing:
        raise ValueError(f"{path}: missing columns {missing}; expected {list(SCORE_COLUMNS)}")
    return {c: (table.column(c).to_pylist() if c in ("prediction", "phrase")
                else table.column(c).to_numpy()) for c in SCORE_COLUMNS}


def merge_out_of_fold(parts: list[Path], out: Path) -> dict:
    """Concatenate fold score files (each covering the samples its model did not see); a sample
    scored twice or never is an error."""
    tables = [read_score_table(p) for p in parts]
    merged = {c: (sum((t[c] for t in tables), []) if c in ("prediction", "phrase")
                  else np.concatenate([t[c] for t in tables])) for c in SCORE_COLUMNS}
    ids, counts = np.unique(merged["sequence_id"], return_counts=True)
    if (counts > 1).any():
        raise ValueError(f"out-of-fold scores: sequence_id {ids[counts > 1][0]} is scored by more than one fold")
    order = np.argsort(merged["sequence_id"], kind="stable")
    merged = {c: ([v[i] for i in order] if isinstance(v, list) else v[order]) for c, v in merged.items()}
    write_table(out, merged)
    plot_histogram(merged["score"], histogram_path(out))
    return {"sequences": len(order), "mean_score": float(np.mean(merged["score"]))}


def histogram_path(scores_path: Path) -> Path:
    return scores_path.with_suffix(".png")


def plot_histogram(values: np.ndarray, png: Path, threshold: float | None = None,
                   title: str = "per-sample score") -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    clipped = np.clip(np.asarray(values, dtype=float), -1.0, 1.0)  # scores can be very negative
    ax.hist(clipped, bins=np.linspace(-1, 1, 41), color="#4477aa")
    if threshold is not None:
        ax.axvline(threshold, color="#cc3311", ls="--", label=f"threshold {threshold:g}")
        ax.legend()
    ax.set(title=title, xlabel="1 - normalised Levenshtein (clipped to [-1, 1])", ylabel="sequences", yscale="log")
    fig.tight_layout()
    atomic_write(png, lambda tmp: fig.savefig(tmp, format="png", dpi=80))
    plt.close(fig)
