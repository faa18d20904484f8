"""The 2nd place's on-device model (aslfr.joint_inference): its decoders inside the graph, pinned
to the Python decoders (aslfr.decoding, float64 prefix scores) in PyTorch and in onnxruntime.

Precision: float32 everywhere in the graph (no bf16 path); what is compared is the decoded
string, exactly. The 2nd place's fixture networks (full size, its own weights) are used in
PyTorch; the exported graphs use small networks of the same design so that export stays quick.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aslfr.config import preset
from aslfr.ctc_attention import preprocess, preprocess_exportable
from aslfr.decoding import decode, logcumsumexp_scan
from aslfr.joint_inference import JointInferenceModule
from aslfr.joint_training import build_model

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "second_place"


def _raw(rng: np.random.Generator, t: int, left_handed: bool = False) -> np.ndarray:
    """Kaggle columns [T, 1629] (x block, y block, z block), some frames all NaN, one hand NaN."""
    x = rng.random((t, 1629)).astype(np.float32)
    hand = 468 if not left_handed else 522  # the hand that is missing
    for c in range(3):
        x[:, c * 543 + hand:c * 543 + hand + 21] = np.nan
    if t > 2:
        x[rng.random(t) < 0.2] = np.nan
    return x


def _text_ids(ids: list[int], sos: int) -> list[int]:
    return [i - 1 for i in ids if 0 < i < sos]


def _rows_ids(rows: np.ndarray, classes: int) -> list[int]:
    return [int(i) for i in rows.argmax(1) if i < classes - 1]


def test_the_scanned_logcumsumexp_is_logcumsumexp() -> None:
    for length, span in [(53, 53), (53, 64), (1, 1), (64, 64), (2, 160)]:
        x = torch.randn(length, 7, dtype=torch.float64) * 400  # thousands of nats apart
        assert torch.allclose(logcumsumexp_scan(x, span), torch.logcumsumexp(x, 0), rtol=0, atol=1e-9)


def test_the_exportable_preprocessing_is_the_preprocessing() -> None:
    rng = np.random.default_rng(0)
    for t, left, max_len in [(40, False, 768), (41, True, 768), (300, True, 100), (1, False, 768)]:
        x = _raw(rng, t, left)
        frames = torch.from_numpy(x.reshape(t, 3, 543).transpose(0, 2, 1).copy())
        ref = preprocess(frames, max_len)
        ours, found = preprocess_exportable(torch.from_numpy(x), max_len)
        assert bool(found) and ours.shape == ref.shape
        assert torch.allclose(ours, ref, atol=1e-6)
    ours, found = preprocess_exportable(torch.full((5, 1629), float("nan")), 768)  # nothing detected
    assert not bool(found) and ours.shape == (1, 1629) and not ours.any()


@pytest.fixture(scope="module")
def fixture_models() -> list:
    """The two networks of the 2nd place's fixtures, loaded by layer name."""
    from aslfr.ctc_attention import CTCAttentionModel, CTCAttentionNet
    from aslfr.keras_import import second_place_state_dict

    models = []
    for h5 in ("second_place_network.h5", "second_place_network_b.h5"):
        arch, sd, _ = second_place_state_dict(FIXTURES / h5, "CCCTCCCTDCCCTCCCT")
        model = CTCAttentionModel(CTCAttentionNet(**arch, bn_group=0))
        model.load_state_dict(sd)
        models.append(model.eval())
    return models


@pytest.mark.parametrize("decoding,weight,which", [("ctc", 0.2, [0]), ("attention", 0.2, [0]), ("joint", 0.2, [0]),
                                                   ("joint", 0.3, [0, 1]), ("ctc", 0.2, [0, 1])])
def test_the_on_device_module_decodes_as_the_python_decoders(fixture_models, decoding, weight, which) -> None:
    """The 2nd place's own networks (fixtures) on its fixture sequences, in PyTorch."""
    models = [fixture_models[i] for i in which]
    module = JointInferenceModule(models, 768, decoding, weight)
    with np.load(FIXTURES / "second_place_decoding.npz") as z:
        sequences = [z[k] for k in sorted(z.files) if k.startswith("frames_")]
    assert len(sequences) >= 4
    for frames in sequences:
        x = torch.from_numpy(frames)
        features = preprocess(x.reshape(len(x), 3, 543).permute(0, 2, 1), 768)
        want = _text_ids(decode(models, features, decoding, weight), module.sos)
        with torch.no_grad():
            got = _rows_ids(module(x).numpy(), module.classes)
        assert got == want


def _checkpoint(path: Path, seed: int) -> Path:
    """A small member of the design (second-place-demo), weights drawn away from their init so
    that its decoders write varied strings."""
    cfg = preset("second-place-demo")
    torch.manual_seed(seed)
    model = build_model(cfg).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    torch.save({"model": model.state_dict(), "config": cfg.to_dict(), "epoch": 0, "step": 0}, path)
    return path


def _aslfr(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "aslfr", *args], capture_output=True, text=True)


@pytest.mark.parametrize("decoding,extra", [("ctc", []), ("attention", []), ("joint", ["--ctc-weight", "0.3"])])
def test_the_exported_model_decodes_as_pytorch(tmp_path: Path, synth_dir: Path, decoding: str,
                                               extra: list[str]) -> None:
    """aslfr export of two checkpoints averaged per step: the strings of the ONNX graph and of the
    float32 TFLite (ai-edge-litert; Kaggle's evaluation also in tflite-runtime 2.14.0, the same
    score) are exactly the Python decoders' on varied lengths, T = 0, 1 and 5,000, an all-NaN
    input and a left-handed signer, and the float16 TFLite's on all but at most 3 of the 11; the
    Recognizer's ONNX loader reads its 1,629 columns; export.json says what it is. The graphs are exported with a cap of 6 steps (export time grows with the steps)."""
    import onnxruntime as ort

    from aslfr.checkpoints import load_model
    from aslfr.evaluate import evaluate_in_runtime, load_runner, read_submission
    from aslfr.recognizer import ExportedModel, Recognizer

    a, b = _checkpoint(tmp_path / "a.pt", 0), _checkpoint(tmp_path / "b.pt", 1)
    out = tmp_path / "export"
    run = _aslfr("export", "--checkpoint", str(a), "--checkpoint", str(b), "--out", str(out), "--no-web",
                 "--decoding", decoding, "--max-tokens", "6", *extra)
    assert run.returncode == 0, run.stderr[-2000:]
    info = json.loads((out / "export.json").read_text())
    assert info["decoding"] == decoding and len(info["checkpoints"]) == 2 and info["columns"] == 1629
    assert info["max_frames"] == 320 and info["max_tokens"] == 6
    runners = [lambda x, s=ort.InferenceSession(str(out / "model.onnx")): s.run(None, {"inputs": x})[0]]
    model_bytes, columns, _ = read_submission(out / "submission.zip")
    assert len(columns) == 1629 and columns[0] == "x_face_0" and columns[543] == "y_face_0"
    runner = load_runner(model_bytes, "litert", columns)
    runners.append(lambda x: runner(inputs=x)["outputs"])
    half = load_runner((out / "model_float16.tflite").read_bytes(), "litert", columns)
    litert = evaluate_in_runtime(out / "submission.zip", synth_dir, 12, "litert")
    old = evaluate_in_runtime(out / "submission.zip", synth_dir, 12, "tflite-runtime")
    assert old["sequences"] == 12 and old["score"] == pytest.approx(litert["score"], abs=1e-9)

    models = [load_model(p)[0].eval() for p in (a, b)]
    weight = 0.3 if decoding == "joint" else 0.2
    rng = np.random.default_rng(5)
    inputs = [_raw(rng, t, left_handed=bool(t % 2)) for t in (0, 1, 2, 3, 30, 31, 120, 319, 500)]
    inputs += [np.full((20, 1629), np.nan, np.float32), _raw(rng, 5000)]
    sos = models[0].net.vocab - 2
    same_in_half = 0
    for x in inputs:
        frames = torch.from_numpy(x).reshape(len(x), 3, 543).permute(0, 2, 1)
        want = _text_ids(decode(models, preprocess(frames, 320), decoding, weight, max_tokens=6), sos)
        for run_model in runners:
            rows = run_model(x)
            assert rows.shape[1] == sos and _rows_ids(rows, sos) == want, len(x)
        rows = half(inputs=x)["outputs"]
        same_in_half += rows.shape[1] == sos and _rows_ids(rows, sos) == want
    # float16 weights move the near-ties of these untrained networks' decisions: most strings agree
    assert same_in_half >= len(inputs) - 3
    model = ExportedModel(out / "model.onnx")
    assert len(model.columns) == 1629
    text = model(inputs[5])
    assert text == "".join(model.charmap.decode(_text_ids(decode(models, preprocess(
        torch.from_numpy(inputs[5]).reshape(-1, 3, 543).permute(0, 2, 1), 320), decoding, weight, max_tokens=6),
        sos)))
    assert Recognizer(out / "model.onnx").transcribe(inputs[5]) == text  # what aslfr live runs


def test_export_options_of_the_other_family_are_refused(tmp_path: Path, trained_run: Path) -> None:
    seed = trained_run / "checkpoints" / "last.pt"
    run = _aslfr("export", "--checkpoint", str(seed), "--out", str(tmp_path / "x"), "--decoding", "joint")
    assert run.returncode == 2 and "--decoding applies to the 2nd place's family only" in run.stderr
    assert len(run.stderr.strip().splitlines()) == 1
    run = _aslfr("export", "--checkpoint", str(seed), "--checkpoint", str(seed), "--out", str(tmp_path / "x"))
    assert run.returncode == 2 and "more than one --checkpoint" in run.stderr
    second = _checkpoint(tmp_path / "p.pt", 0)
    run = _aslfr("export", "--checkpoint", str(second), "--out", str(tmp_path / "y"), "--decoding", "joint",
                 "--ctc-weight", "1.5", "--onnx-only")
    assert run.returncode == 2 and "ctc_weight 1.5" in run.stderr
    run = _aslfr("export", "--checkpoint", str(second), "--checkpoint", str(seed), "--out", str(tmp_path / "y"),
                 "--onnx-only")
    assert run.returncode == 2 and "holds the seed's network" in run.stderr
