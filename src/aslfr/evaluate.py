"""`aslfr evaluate`: Kaggle's evaluator re-implemented, sharing no code with the model.

It reads a submission.zip (model.tflite + inference_args.json), reads each parquet of a
Kaggle-layout directory with the `selected_columns` only, calls the TFLite signature runner once
per sequence (one thread), decodes the argmax of every output row and drops indices >= 59, and
computes the competition metric with its own Levenshtein distance. It imports only the standard
library, NumPy, pyarrow and a TFLite runtime, so it also runs inside the converter environment
with tflite-runtime 2.14.0, the runtime Kaggle's evaluator used:

    python -m aslfr.evaluate SUBMISSION DATA_DIR [--limit N] [--runtime litert|tflite-runtime]
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

CHARMAP_KEY = "character_to_prediction_index"

TEST_SET_SEQUENCES = 50_000
BUDGET_SECONDS = 5 * 3600


def levenshtein(a: str, b: str) -> int:
    prev = list(range(len(b) + 1))
    for i, ca in enumerate(a, 1):
        cur = [i]
        for j, cb in enumerate(b, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (ca != cb)))
        prev = cur
    return prev[-1]


def read_submission(submission: Path) -> tuple[bytes, list[str], dict[str, int] | None]:
    """model.tflite's bytes, inference_args.json's selected_columns and the model's character map
    (None where the submission carries none: the competition's), checked."""
    if not submission.is_file():
        raise FileNotFoundError(f"{submission}: not found")
    try:
        with zipfile.ZipFile(submission) as z:
            names = set(z.namelist())
            for need in ("model.tflite", "inference_args.json"):
                if need not in names:
                    raise ValueError(f"{submission}: no {need} inside (it holds {sorted(names)})")
            model_bytes = z.read("model.tflite")
            args = json.loads(z.read("inference_args.json"))
    except zipfile.BadZipFile:
        raise ValueError(f"{submission}: not a zip file (expected a submission.zip with model.tflite and "
                         f"inference_args.json)") from None
    except UnicodeDecodeError as e:
        raise ValueError(f"{submission}: inference_args.json is not UTF-8 text (byte {e.start}: "
                         f"{e.object[e.start:e.start + 1]!r})") from None
    except json.JSONDecodeError as e:
        raise ValueError(f"{submission}: inference_args.json is not valid JSON ({e})") from None
    columns = args.get("selected_columns") if isinstance(args, dict) else None
    if not isinstance(columns, list) or not columns or not all(isinstance(c, str) for c in columns):
        raise ValueError(f"{submission}: inference_args.json has no 'selected_columns' list of column names")
    mapping = args.get(CHARMAP_KEY)
    if mapping is not None:
        _check_map(mapping, f"{submission}: inference_args.json's {CHARMAP_KEY}")
    return model_bytes, columns, mapping


def _check_map(mapping: object, where: str) -> None:
    """A character map: non-empty strings to the whole numbers 0..n-1, each once (the evaluator
    shares no code with the model, so it checks the rule itself)."""
    if not isinstance(mapping, dict) or not mapping:
        raise ValueError(f"{where}: expected a JSON object of character -> index")
    if not all(isinstance(k, str) and k for k in mapping):
        raise ValueError(f"{where}: every character must be a non-empty string")
    values = list(mapping.values())
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in values) or \
            sorted(values) != list(range(len(values))):
        raise ValueError(f"{where}: the indices must be the whole numbers 0 to {len(values) - 1}, each once")


def load_runner(model_bytes: bytes, runtime: str, columns: list[str] | None = None, name: str = "model.tflite"):
    """The `serving_default` signature runner (one thread); with `columns`, checked to take that
    many values per frame."""
    if runtime == "litert":
        from ai_edge_litert.interpreter import Interpreter
    elif runtime == "tflite-runtime":
        from tflite_runtime.interpreter import Interpreter
    else:
        raise ValueError(f"runtime {runtime!r}: expected 'litert' or 'tflite-runtime'")
    try:
        interpreter = Interpreter(model_content=model_bytes, num_threads=1)
        runner = interpreter.get_signature_runner("serving_default")
        details = runner.get_input_details()["inputs"]
    except (ValueError, RuntimeError, KeyError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ValueError(f"{name}: not a loadable TFLite model with a serving_default signature taking "
                         f"'inputs' ({first})") from None
    width = int(details.get("shape_signature", details["shape"])[-1])
    if columns is not None and width != len(columns):
        raise ValueError(f"{name}: the model takes {width} values per frame, but inference_args.json selects "
                         f"{len(columns)} columns")
    return runner


def read_sequences(data_dir: Path, columns: list[str], limit: int | None):
    """(sequence_id, phrase, frames [T, len(columns)]) in train.csv order, up to `limit`."""
    csv_path = data_dir / "train.csv"
    if not csv_path.is_file():
        raise FileNotFoundError(f"{csv_path}: not found (expected a Kaggle-layout directory)")
    with open(csv_path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    if limit:
        rows = rows[:limit]
    by_path: dict[str, list[dict]] = {}
    for r in rows:
        by_path.setdefault(r["path"], []).append(r)
    for rel, members in by_path.items():
        path = data_dir / rel
        try:
            present = set(pq.read_schema(path).names)
        except Exception as e:  # noqa: BLE001 - name the file, whatever pyarrow raised
            raise ValueError(f"{path}: not a readable parquet file ({str(e).splitlines()[0]})") from None
        missing = [c for c in columns + ["sequence_id"] if c not in present]
        if missing:
            raise ValueError(f"{path}: {len(missing)} of the selected columns are not in the file "
                             f"(first: {', '.join(missing[:3])})")
        try:
            table = pq.read_table(path, columns=columns + ["sequence_id"])
        except Exception as e:  # noqa: BLE001 - name the file, whatever pyarrow raised
            raise ValueError(f"{path}: cannot read the selected columns: {e}") from None
        ids = table.column("sequence_id").to_numpy()
        values = np.stack([table.column(c).to_numpy(zero_copy_only=False) for c in columns], 1).astype(np.float32)
        order = np.argsort(ids, kind="stable")
        ids, values = ids[order], values[order]
        starts = np.searchsorted(ids, [int(m["sequence_id"]) for m in members], "left")
        ends = np.searchsorted(ids, [int(m["sequence_id"]) for m in members], "right")
        for m, a, b in zip(members, starts, ends):
            yield int(m["sequence_id"]), m["phrase"], values[a:b]


def evaluate_submission(submission: str | Path, data_dir: str | Path, limit: int | None = None,
                        runtime: str = "litert") -> dict:
    submission, data_dir = Path(submission), Path(data_dir)
    model_bytes, columns, model_map = read_submission(submission)
    if not data_dir.is_dir():
        raise FileNotFoundError(f"{data_dir}: data directory not found")
    char_map = data_dir / "character_to_prediction_index.json"
    if not char_map.is_file():
        raise FileNotFoundError(f"{char_map}: not found (expected a Kaggle-layout directory)")
    with open(char_map, encoding="utf-8") as f:
        data_map = json.load(f)
    if model_map is not None and model_map != data_map:
        raise ValueError(f"{submission}: the model's character map ({len(model_map)} characters) is not "
                         f"{char_map}'s ({len(data_map)})")
    index_to_char = {v: k for k, v in data_map.items()}
    n_chars = len(index_to_char)  # outputs at or past it are the blank (59 for the competition)
    runner = load_runner(model_bytes, runtime, columns, f"{submission}: model.tflite")
    predictions, targets, latencies, lengths = [], [], [], []
    for _, phrase, frames in read_sequences(data_dir, columns, limit):
        t0 = time.perf_counter()
        out = runner(inputs=frames)["outputs"]
        latencies.append(time.perf_counter() - t0)
        predictions.append("".join(index_to_char[int(i)] for i in np.argmax(out, axis=1) if int(i) < n_chars))
        targets.append(phrase)
        lengths.append(len(frames))
    if not targets:
        raise ValueError(f"{data_dir}: no sequences to evaluate")
    n = sum(len(t) for t in targets)
    d = sum(levenshtein(p, t) for p, t in zip(predictions, targets))
    lat = np.array(latencies)
    projected = float(lat.mean()) * TEST_SET_SEQUENCES
    return {"runtime": runtime, "sequences": len(targets), "score": (n - d) / n,
            "latency_ms_median": float(np.median(lat) * 1e3), "latency_ms_p95": float(np.percentile(lat, 95) * 1e3),
            "mean_frames": float(np.mean(lengths)), "model_bytes": len(model_bytes),
            "projected_seconds_for_50k": projected, "budget_seconds": BUDGET_SECONDS,
            "projected_share_of_budget": projected / BUDGET_SECONDS}


def evaluate_in_runtime(submission: str | Path, data_dir: str | Path, limit: int | None, runtime: str,
                        python: str | Path | None = None) -> dict:
    """Evaluate in `runtime`; tflite-runtime lives in the converter environment (numpy<2), so
    this file runs there as a script in a subprocess."""
    if runtime == "litert" and python is None:
        return evaluate_submission(submission, data_dir, limit, runtime)
    import subprocess

    if python is None:
        from aslfr.export import converter_python
        python = converter_python()
    if not Path(python).is_file():
        raise FileNotFoundError(f"{python}: no Python with {runtime}; create it with 'make tools'")
    cmd = [str(python), str(Path(__file__).resolve()), str(submission), str(data_dir), "--runtime", runtime]
    if limit:
        cmd += ["--limit", str(limit)]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode == 2 and run.stderr.strip():  # a user error, said in one line
        raise ValueError(run.stderr.strip().splitlines()[-1])
    if run.returncode != 0:
        raise RuntimeError(f"evaluation in {runtime} failed:\n{run.stderr[-2000:]}")
    return json.loads(run.stdout.strip().splitlines()[-1])


def format_result(r: dict) -> str:
    return (f"[{r['runtime']}] {r['sequences']} sequences: score {r['score']:.4f}; latency median "
            f"{r['latency_ms_median']:.1f} ms, p95 {r['latency_ms_p95']:.1f} ms (one thread, mean "
            f"{r['mean_frames']:.0f} frames); model {r['model_bytes'] / 2**20:.2f} MiB; 50,000 sequences "
            f"~ {r['projected_seconds_for_50k'] / 3600:.2f} h of the 5 h budget "
            f"({100 * r['projected_share_of_budget']:.0f}%)")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("submission", type=Path)
    p.add_argument("data_dir", type=Path)
    p.add_argument("--limit", type=int)
    p.add_argument("--runtime", default="litert")
    a = p.parse_args(argv)
    try:
        print(json.dumps(evaluate_submission(a.submission, a.data_dir, a.limit, a.runtime)))
    except (ValueError, FileNotFoundError) as e:
        print(e, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
