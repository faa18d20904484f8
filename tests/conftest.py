from __future__ import annotations

from pathlib import Path

import pytest

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
