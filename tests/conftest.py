from __future__ import annotations

import csv
import os
import tempfile
from pathlib import Path

import pytest

# The matmul kernels' choices (aslfr.kernels) are cached per machine: the suite keeps its own,
# shared by every process it starts, and leaves the user's alone.
if "ASLFR_CACHE_DIR" not in os.environ:
    import atexit
    import shutil

    os.environ["ASLFR_CACHE_DIR"] = tempfile.mkdtemp(prefix="aslfr-test-cache-")
    atexit.register(shutil.rmtree, os.environ["ASLFR_CACHE_DIR"], True)  # removed when the suite ends

from aslfr.data.prepare import prepare
from aslfr.data.synthetic import synthesize


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small Kaggle-layout dataset: 80 sequences, 8 signers, 2 files, corrupt samples planted."""
    out = tmp_path_factory.mktemp("synth")
    synthesize(out, sequences=80, participants=8, files=2, seed=7, corrupt_fraction=0.25,
               supplemental=12, progress=False)
    return out


@pytest.fixture(scope="session")
def prepared_dir(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("prepared")
    prepare(synth_dir, out, progress=False)
    return out


def write_csv(path: Path, rows: list[dict]) -> None:
    """Rewrite a csv file (train.csv, say) from its rows as dicts."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        w.writerows(rows)


# Float32 unless a test says otherwise: the demo preset's bf16=auto would turn bf16 autocast on
# where the CPU has native bf16 (AVX512_BF16, AMX) and off elsewhere, and a test that compares
# numbers across runs, processes or runtimes must test the same precision on every machine.
FLOAT32 = "bf16=false"
BF16 = "bf16=true"  # autocast; emulated (slow, but the same arithmetic) on a CPU without native bf16
TINY = ["dim=32", "heads=2", "stages=1", "kernel_sizes=5,3", "batch_size=8", "epochs=3",
        "eval_every=1", "checkpoint_every=1", "workers=0", "max_len=64", "warmup_epochs=1",
        "lr=3e-3", "lookahead_alpha=0.5",  # the tests exercise Lookahead, which the demo preset turns off
        FLOAT32]


@pytest.fixture(scope="session")
def trained_run(prepared_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny model trained for a few epochs: enough to have real, non-random weights."""
    from aslfr.config import preset
    from aslfr.train import train

    out = tmp_path_factory.mktemp("trained")
    train(preset("demo").override(TINY + ["epochs=4"]), prepared_dir, out, progress=False)
    return out


@pytest.fixture(scope="session")
def exported(trained_run: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The trained model exported once: model.onnx, the TFLite files, submission.zip (needs
    the converter environment, `make tools`)."""
    from aslfr.export import converter_python, export

    if not converter_python().is_file():
        pytest.skip("TFLite converter environment missing: run 'make tools'")
    out = tmp_path_factory.mktemp("export")
    export(trained_run / "checkpoints" / "last.pt", out, max_frames=48, log=lambda *_: None)
    return out
