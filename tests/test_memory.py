"""The allocator the heavy commands restart with, and the loader's worker count."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

import aslfr.memory as memory
from aslfr.config import Config, preset
from aslfr.data.loader import loader_workers

from conftest import BF16, FLOAT32, TINY


def _train(data: Path, out: Path, env: dict, precision: str = FLOAT32) -> tuple[str, list[dict]]:
    sets = sum((["--set", s] for s in [*TINY, "epochs=1", precision]), [])
    run = subprocess.run([sys.executable, "-m", "aslfr", "train", "--preset", "demo", "--data", str(data),
                          "--out", str(out), *sets], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    for r in rows:
        r.pop("epoch_seconds")
    return run.stdout, rows


@pytest.mark.parametrize("precision", [FLOAT32, BF16], ids=["float32", "bf16"])
def test_train_restarts_with_the_installed_allocator_and_learns_the_same(prepared_dir: Path, tmp_path: Path,
                                                                         precision: str) -> None:
    """The same metrics, to the bit, with and without the restart, in float32 and under bf16
    autocast (native or emulated by the CPU)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ASLFR_ALLOCATOR", "THP_MEM"))}
    out, rows = _train(prepared_dir, tmp_path / "default", env, precision)
    found = memory.find_allocator()
    expected = found[0] if found else "glibc malloc with transparent huge pages for large tensors"
    assert f"memory allocator: {expected}\n" in out
    plain_out, plain_rows = _train(prepared_dir, tmp_path / "system", {**env, "ASLFR_ALLOCATOR": "system"}, precision)
    assert "memory allocator: glibc malloc\n" in plain_out
    assert rows == plain_rows  # the allocator changes the speed, never the arithmetic


def test_allocator_environment_preloads_the_library_and_refuses_unknown_names(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ASLFR_ALLOCATOR", raising=False)
    monkeypatch.setenv("LD_PRELOAD", "/opt/other.so")
    (tmp_path / "libjemalloc.so.2").write_bytes(b"")
    monkeypatch.setattr(memory, "_library_dirs", lambda: [tmp_path])
    assert memory.find_allocator() == ("jemalloc", tmp_path / "libjemalloc.so.2")
    env = memory.allocator_environment()
    assert env["LD_PRELOAD"] == f"{tmp_path / 'libjemalloc.so.2'} /opt/other.so"
    assert env["MALLOC_CONF"] == "dirty_decay_ms:-1,muzzy_decay_ms:-1" and env[memory._ACTIVE] == "jemalloc"
    (tmp_path / "libtcmalloc_minimal.so.4").write_bytes(b"")
    assert memory.allocator_environment()[memory._ACTIVE] == "tcmalloc"  # preferred when both are there
    assert memory.allocator_environment("system") is None
    with pytest.raises(ValueError, match="ASLFR_ALLOCATOR=mimalloc: expected tcmalloc, jemalloc or system"):
        memory.allocator_environment("mimalloc")
    monkeypatch.setattr(memory, "_library_dirs", lambda: [tmp_path / "nothing"])
    assert memory.allocator_environment() is None
    with pytest.raises(ValueError, match="ASLFR_ALLOCATOR=tcmalloc: not installed .*libtcmalloc-minimal4"):
        memory.allocator_environment("tcmalloc")


def test_an_allocator_that_is_not_installed_is_one_line_and_exit_2(tmp_path: Path) -> None:
    env = {**os.environ, "ASLFR_ALLOCATOR": "hoard"}
    env.pop(memory._ACTIVE, None)
    run = subprocess.run([sys.executable, "-m", "aslfr", "train", "--data", str(tmp_path), "--out", str(tmp_path)],
                         capture_output=True, text=True, env=env)
    assert run.returncode == 2
    assert run.stderr.strip() == "aslfr train: error: ASLFR_ALLOCATOR=hoard: expected tcmalloc, jemalloc or system"


def test_loader_workers_auto_follows_the_device(monkeypatch: pytest.MonkeyPatch) -> None:
    import aslfr.data.loader as loader_module

    assert preset("seed-base").workers == -1 and Config().override(["workers=auto"]).workers == -1
    assert loader_workers(3, "cuda:0") == 3 and loader_workers(0, "cpu") == 0
    assert loader_workers(-1, "cpu") == 1  # the model takes the cores: one worker overlaps the loading
    monkeypatch.setattr(loader_module, "available_cores", lambda: 16)
    assert loader_workers(-1, "cuda:0") == 15
    assert loader_workers(-1, "cuda:0", world=4) == 3  # each of 4 processes on a 16-core machine
    monkeypatch.setattr(loader_module, "available_cores", lambda: 64)
    assert loader_workers(-1, "cuda") == 16
    with pytest.raises(ValueError, match="workers"):
        Config().override(["workers=-2"]).check()


def test_worker_batches_are_collated_in_shared_memory_and_match_the_main_process(
        prepared_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker collates straight into shared memory (so sending the batch to the trainer copies
    nothing); the batches are the ones the main process builds itself."""
    import numpy as np
    import torch

    from aslfr.data.loader import EpochBatches, Samples, collate, make_loader

    cfg = preset("demo").override([*TINY, "batch_size=4"])
    samples = Samples(prepared_dir, cfg, train=True)
    indices = np.arange(12)
    loaded = {}
    for workers in (0, 1):
        loader = make_loader(samples, EpochBatches(indices, 4, cfg.seed, 0, 1), cfg.override([f"workers={workers}"]), "cpu")
        loaded[workers] = list(loader)
    items = [samples[(0, i)] for i in range(4)]
    assert not collate(items, 64, cfg.charmap.blank)["features"].is_shared()  # the main process: plain memory
    monkeypatch.setattr(torch.utils.data, "get_worker_info", lambda: object())
    assert collate(items, 64, cfg.charmap.blank)["features"].is_shared()  # a worker: shared memory
    for a, b in zip(loaded[0], loaded[1]):
        assert torch.equal(a["features"], b["features"]) and torch.equal(a["labels"], b["labels"])
