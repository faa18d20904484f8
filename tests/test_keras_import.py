"""`aslfr import-keras`: the seed's Keras 2 weight files and pickled statistics, read as data."""

from __future__ import annotations

import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from aslfr.cli import main
from aslfr.keras_import import KerasImportError, import_keras, keras_state_dict, read_stats_pickle
from aslfr.config import preset
from aslfr.checkpoints import load_model

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
H5 = FIXTURES / "seed_keras_network.h5"


@pytest.fixture(scope="module")
def stats_pickles(tmp_path_factory) -> tuple[Path, Path]:
    out = tmp_path_factory.mktemp("stats")
    rng = np.random.default_rng(0)
    pickle.dump(rng.normal(size=600).astype(np.float32), open(out / "MEANs.p", "wb"))
    pickle.dump((rng.random(600) + 0.5).astype(np.float32), open(out / "STDs.p", "wb"))
    return out / "MEANs.p", out / "STDs.p"


@pytest.fixture(scope="module")
def imported(tmp_path_factory, stats_pickles) -> Path:
    out = tmp_path_factory.mktemp("imported") / "seed.pt"
    assert main(["import-keras", str(H5), "--out", str(out), "--stats", *map(str, stats_pickles)]) == 0
    return out


def test_imported_checkpoint_loads_like_a_trained_one_and_computes_keras(imported: Path, stats_pickles) -> None:
    model, cfg, stats = load_model(imported)
    assert (cfg.dim, cfg.stages, cfg.heads, cfg.max_len, cfg.bn_group) == (48, 5, 6, 340, 32)
    np.testing.assert_array_equal(stats[0], read_stats_pickle(stats_pickles[0]))
    with np.load(FIXTURES / "seed_keras_network.npz") as ref, torch.no_grad():
        out = model(torch.from_numpy(ref["x_eval_padded"])).numpy()
        np.testing.assert_allclose(out, ref["logits_eval_padded"], atol=1e-4, rtol=1e-4)


def test_imported_checkpoint_scores_exports_and_transcribes(imported: Path, prepared_dir: Path, synth_dir: Path,
                                                           tmp_path: Path) -> None:
    from aslfr.score import score
    from aslfr.recognizer import transcribe

    r = score(imported, prepared_dir, tmp_path / "scores.parquet", progress=False)
    assert r["sequences"] > 0 and np.isfinite(r["mean_score"])
    assert main(["export", "--checkpoint", str(imported), "--out", str(tmp_path / "exp"), "--onnx-only",
                 "--max-frames", "64"]) == 0
    results = transcribe(synth_dir / "train_landmarks", tmp_path / "exp" / "model.onnx", progress=False)
    # the ONNX model says what the imported network itself says on the same frames
    from aslfr.inference import build
    from aslfr.landmarks import SELECTED_COLUMNS
    from aslfr.sources import parquet_sequences
    from aslfr.vocab import COMPETITION

    module, _ = build(imported, max_frames=64)
    texts = {r["sequence_id"]: r["text"] for r in results}
    path = sorted((synth_dir / "train_landmarks").glob("*.parquet"))[0]
    for sid, frames in list(parquet_sequences(path, SELECTED_COLUMNS))[:8]:
        with torch.no_grad():
            rows = module(torch.from_numpy(np.ascontiguousarray(frames, np.float32))).numpy()
        assert texts[sid] == COMPETITION.decode(rows.argmax(1)), sid


def _copy_without(tmp_path: Path, layer: str) -> Path:
    """The fixture with one layer's weights removed from the layer list, as another structure."""
    path = tmp_path / "other.h5"
    shutil.copy(H5, path)
    with h5py.File(path, "r+") as f:
        names = [n if isinstance(n, bytes) else n.encode() for n in f.attrs["layer_names"]]
        f.attrs["layer_names"] = np.array([n for n in names if n != layer.encode()], dtype=bytes)
    return path


@pytest.mark.parametrize("removed, named", [("2_bn", "eca_1"), ("layer_normalization_3", "dense_6"),
                                            ("dense_20", "the file ends")])
def test_another_structure_names_the_first_layer_that_does_not_fit(tmp_path: Path, removed: str, named: str) -> None:
    with pytest.raises(KerasImportError, match=named):
        keras_state_dict(_copy_without(tmp_path, removed), preset("seed-final"))


def test_bad_files_get_one_line(tmp_path: Path, capsys) -> None:
    truncated = tmp_path / "cut.h5"
    truncated.write_bytes(H5.read_bytes()[:200_000])
    text = tmp_path / "notes.h5"
    text.write_text("not weights")
    for path, says in ((truncated, "truncated or damaged"), (text, "not an HDF5 file"), (tmp_path / "no.h5", "no such file")):
        assert main(["import-keras", str(path), "--out", str(tmp_path / "x.pt")]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and says in err and str(path) in err
    assert not (tmp_path / "x.pt").exists()


class _Payload:
    def __reduce__(self):
        return (print, ("this must not run",))


def test_stats_pickles_are_read_as_data(tmp_path: Path) -> None:
    evil = tmp_path / "evil.p"
    evil.write_bytes(pickle.dumps(_Payload()))
    with pytest.raises(KerasImportError, match="refuses builtins.print"):
        read_stats_pickle(evil)
    short = tmp_path / "short.p"
    short.write_bytes(pickle.dumps(np.zeros(599, np.float32)))
    with pytest.raises(KerasImportError, match="shape \\(599,\\)"):
        read_stats_pickle(short)
    plain = tmp_path / "list.p"
    plain.write_bytes(pickle.dumps([float(i) for i in range(600)]))
    assert read_stats_pickle(plain)[599] == 599


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "evil.pt"
    torch.save({"model": {}, "config": {}, "payload": _Payload()}, path)
    code = ("import sys; from aslfr.cli import main; sys.exit(main(['score', '--checkpoint', sys.argv[1], "
            "'--data', sys.argv[1], '--out', sys.argv[2]]))")
    run = subprocess.run([sys.executable, "-c", code, str(path), str(tmp_path / "s.parquet")],
                         capture_output=True, text=True)
    assert run.returncode == 2 and "this must not run" not in run.stdout
    assert "not a readable aslfr checkpoint" in run.stderr and str(path) in run.stderr


def test_import_without_stats_says_how_to_add_them(tmp_path: Path, capsys) -> None:
    r = import_keras(H5, tmp_path / "s.pt", preset_name="seed-final")
    assert not r["stats"] and r["differs"]["dim"] == (48, 384)
    assert main(["import-keras", str(H5), "--out", str(tmp_path / "t.pt")]) == 0
    assert "--stats MEANS STDS" in capsys.readouterr().out
