"""Checkpoints and the run directory's identity: how a checkpoint is written, found, read (as
data, never code) and loaded into a model, and what makes a run directory one job.

A run directory holds `run.json` (the job's identity: its settings, the prepared data and the
scores it filters with, by content), `config.json`, `metrics.jsonl` and `checkpoints/`
(`epoch_NNNNN.pt` and `last.pt`, each written through a temporary name). `train`, `score`,
`export`, `import-keras` and the recogniser read checkpoints only through this module.
"""

from __future__ import annotations

import hashlib
import json
import os
import pickle
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from aslfr.config import Config
from aslfr.files import atomic_write
from aslfr.messages import first_line
from aslfr.model import FingerspellingModel

if TYPE_CHECKING:
    from aslfr.optim import Lookahead


class TrainingError(RuntimeError):
    """A run, a run directory or a checkpoint that cannot be used as asked (one line for the user)."""


def save_checkpoint(path: Path, model, opt: Lookahead, cfg: Config, epoch: int, step: int,
                     stats: tuple[np.ndarray, np.ndarray]) -> None:
    """The checkpoint carries the normalisation statistics, so it alone defines the model."""
    state = {"model": model.state_dict(), "optimizer": opt.state_dict(), "config": cfg.to_dict(),
             "epoch": epoch, "step": step, "torch_rng": torch.get_rng_state(),
             "stats": {"mean": stats[0], "std": stats[1]}}
    atomic_write(path, lambda tmp: torch.save(state, tmp))


def last_checkpoint(run_dir: Path) -> Path | None:
    path = run_dir / "checkpoints" / "last.pt"
    return path if path.is_file() else None


def epoch_checkpoints(folder: Path) -> list[Path]:
    """epoch_*.pt in `folder`, newest first."""
    return sorted(folder.glob("epoch_*.pt"), key=lambda p: p.name, reverse=True)


def _epoch_of(path: Path) -> int:
    return int(path.stem.split("_")[1])


def _first_readable(paths: list[Path], device: str = "cpu", log=None) -> tuple[Path, dict] | None:  # noqa: ANN001
    """The first of `paths` that reads as a checkpoint, with its contents; each unreadable one
    is passed over, saying so through `log`."""
    for path in paths:
        try:
            return path, read_checkpoint(path, device)
        except TrainingError as e:
            if log:
                log(f"warning: {e}; passing over it")
    return None


def newest_intact_checkpoint(run_dir: Path, log=None) -> tuple[Path, dict] | None:  # noqa: ANN001
    """The run's newest checkpoint that reads, with its contents: last.pt, unless an epoch file
    is newer (a run stopped between writing the two), else the newest epoch_*.pt that reads."""
    folder = run_dir / "checkpoints"
    epochs = epoch_checkpoints(folder)
    last = _first_readable([folder / "last.pt"], log=log) if (folder / "last.pt").is_file() else None
    if last is not None and not (epochs and _epoch_of(epochs[0]) > last[1].get("epoch", 0)):
        return last
    found = [c for c in (last, _first_readable(epochs, log=log)) if c is not None]
    return max(found, key=lambda c: c[1].get("epoch", 0)) if found else None


#: Settings a run may change when it continues: how long it trains (the cosine schedule then
#: runs to the new end from where the run is) and how often it validates and saves.
CONTINUABLE = ("epochs", "eval_every", "checkpoint_every", "workers", "compile")


def file_digest(path: Path | None) -> str | None:
    if path is None:
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def run_identity(cfg: Config, data: Path, scores: Path | None) -> dict:
    """What makes a run the same job: its settings, the prepared data (its metadata and
    statistics, by content) and the scores it filters with."""
    return {"config": cfg.to_dict(),
            "data": {"path": str(data), "metadata": file_digest(data / "metadata.parquet"),
                     "stats": file_digest(data / "stats.npz")},
            "scores": None if scores is None else {"path": str(scores), "sha256": file_digest(scores)}}


def identity_differences(old: dict, new: dict) -> list[str]:
    """What differs between two runs' identities, in words (settings that may change on
    continuing are not differences)."""
    out = []
    a, b = json.loads(json.dumps(old.get("config", {}))), json.loads(json.dumps(new["config"]))  # tuples as lists
    for key in sorted(set(a) | set(b)):
        if key not in CONTINUABLE and a.get(key) != b.get(key):
            out.append(f"{key} {a.get(key)!r} -> {b.get(key)!r}")
    if "data" in old and (old["data"]["metadata"], old["data"]["stats"]) != (new["data"]["metadata"], new["data"]["stats"]):
        out.append(f"data {old['data']['path']} -> {new['data']['path']} (other prepared data)")
    if "scores" in old and (old["scores"] or {}).get("sha256") != (new["scores"] or {}).get("sha256"):
        out.append(f"scores {(old['scores'] or {}).get('path')} -> {(new['scores'] or {}).get('path')} (other scores)")
    return out


def read_checkpoint(path: Path, device: str = "cpu") -> dict:
    """A checkpoint's contents, read as data: tensors, numbers, strings, containers and float
    numpy arrays only (PyTorch's weights-only unpickler), so that a file from elsewhere cannot
    run code."""
    allowed = [np.ndarray, np.dtype, np.dtypes.Float32DType, np.dtypes.Float64DType,
               getattr(np, "_core", np.core).multiarray._reconstruct]
    try:
        with torch.serialization.safe_globals(allowed):
            state = torch.load(path, map_location=device, weights_only=True)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such checkpoint") from None
    except pickle.UnpicklingError:  # torch's message would suggest loading it unsafely: never
        raise TrainingError(f"{path}: not a readable aslfr checkpoint (it is not a torch file of tensors and "
                            f"plain data; refused, not unpickled)") from None
    except Exception as e:  # noqa: BLE001 - any unreadable file is the same user error
        raise TrainingError(f"{path}: not a readable aslfr checkpoint ({type(e).__name__}: "
                            f"{first_line(e)})") from None
    if not isinstance(state, dict) or not {"model", "config"} <= set(state):
        raise TrainingError(f"{path}: not an aslfr checkpoint (no 'model' and 'config' entries)")
    return state


def load_model(checkpoint: Path, device: str = "cpu"
               ) -> tuple[FingerspellingModel, Config, tuple[np.ndarray, np.ndarray] | None]:
    """The model, its settings and the normalisation statistics it was trained with (None for a
    checkpoint written before they were stored). Trained and imported (`aslfr import-keras`)
    checkpoints load the same way. `model.source` is the file read: `checkpoint`, or the newest
    intact epoch file beside a damaged one."""
    checkpoint = Path(checkpoint)
    try:
        state = read_checkpoint(checkpoint, device)
    except TrainingError as e:
        # a cut-off last.pt (or epoch file) with intact epoch checkpoints beside it
        older = [p for p in epoch_checkpoints(checkpoint.parent) if p.name != checkpoint.name
                 and (checkpoint.name == "last.pt" or p.name < checkpoint.name)]
        found = _first_readable(older, device)
        if found is None:
            raise
        print(f"warning: {e}; using {found[0]} instead", file=sys.stderr)
        checkpoint, state = found
    weights = state["model"]
    if not isinstance(weights, dict) or not all(isinstance(v, torch.Tensor) for v in weights.values()):
        raise TrainingError(f"{checkpoint}: its 'model' entry is not a set of named weights")
    try:
        cfg = Config.from_dict(state["config"]).check()
        if cfg.network == "ctc-attention":
            from aslfr.joint_training import build_model

            model = build_model(cfg).to(device)
        else:
            model = FingerspellingModel(cfg).to(device)
    except (TypeError, ValueError, KeyError, AttributeError) as e:
        raise TrainingError(f"{checkpoint}: its settings cannot build a model ({first_line(e)})") from None
    try:
        model.load_state_dict(weights)
    except RuntimeError as e:
        raise TrainingError(f"{checkpoint}: its weights do not fit its settings ({first_line(e)})") from None
    stats = None
    if "stats" in state:
        from aslfr.features import N_FEATURES

        entry = state["stats"]
        stats = (entry.get("mean"), entry.get("std")) if isinstance(entry, dict) else (None, None)
        for name, a in zip(("mean", "std"), stats):
            a = np.asarray(a) if a is not None else None
            if a is None or a.shape != (N_FEATURES,) or a.dtype.kind != "f" or not np.isfinite(a).all():
                raise TrainingError(f"{checkpoint}: its normalisation '{name}' is not {N_FEATURES} finite floats")
    model.source = checkpoint  # the file actually read (an intact epoch file in place of a damaged last.pt)
    return model.eval(), cfg, stats


def read_identity(out: Path) -> dict | None:
    """The identity a run directory records (run.json; a run from before it: its config.json)."""
    for name in ("run.json", "config.json"):  # config.json alone: a run from before run.json
        path = out / name
        if path.is_file():
            try:
                found = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError, UnicodeDecodeError) as e:
                raise TrainingError(f"{path}: unreadable ({first_line(e)}); the run directory is damaged: train "
                                    f"into another --out, or delete {out} to start over") from None
            if not isinstance(found, dict):
                raise TrainingError(f"{path}: not a run's record; train into another --out, or delete {out}")
            return found if name == "run.json" else {"config": found}
    return None


@contextmanager
def run_lock(out: Path, hold: bool = True) -> Iterator[None]:
    """Hold `out`'s lock (an advisory lock on `out/.lock`, released by the system if the process
    dies) for the body; another process already holding it is a TrainingError naming it. Under
    torchrun only the main process (`hold`) takes it. A directory that this call created and that
    holds nothing else afterwards is removed again, so a refused run leaves nothing behind."""
    if not hold:
        yield
        return
    import fcntl

    created = not out.exists()
    out.mkdir(parents=True, exist_ok=True)
    lock = out / ".lock"
    with open(lock, "a+") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            holder = f.read().strip() or "unknown"
            raise TrainingError(f"{out}: another 'aslfr train' is running in it (process {holder}); wait for it to "
                                f"finish, or train into another --out") from None
        f.seek(0)
        f.truncate()
        f.write(f"{os.getpid()}\n")
        f.flush()
        try:
            yield
        finally:
            if created and [p.name for p in out.iterdir()] == [".lock"]:
                lock.unlink()
                out.rmdir()
            fcntl.flock(f, fcntl.LOCK_UN)
