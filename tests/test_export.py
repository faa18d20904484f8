"""The on-device model: PyTorch, ONNX and TFLite agree, edge cases run, the submission is valid."""

import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from aslfr.data.shards import ShardDataset
from aslfr.evaluate import evaluate_in_runtime, evaluate_submission, levenshtein
from aslfr.export import convert_tflite, converter_python, export_onnx
from aslfr.inference import build, greedy_rows
from aslfr.landmarks import SELECTED_COLUMNS
from aslfr.vocab import BLANK, CHARACTERS, ctc_greedy

needs_converter = pytest.mark.skipif(not converter_python().is_file(),
                                     reason="TFLite converter environment missing: run 'make tools'")


def _decode(rows: np.ndarray) -> str:
    return "".join(CHARACTERS[i] for i in rows.argmax(1) if i < BLANK)


def test_greedy_rows_is_greedy_ctc_compacted() -> None:
    g = torch.Generator().manual_seed(0)
    for t in (1, 2, 7, 50):
        for _ in range(20):
            logits = torch.randn(t, BLANK + 1, generator=g)
            # plant runs of repeats and blanks
            logits[torch.rand(t, generator=g) < 0.3, BLANK] += 10
            for k in range(1, t):
                if torch.rand(1, generator=g) < 0.3:
                    logits[k] = logits[k - 1]
            rows = greedy_rows(logits).numpy()
            expected = ctc_greedy(logits.argmax(-1).numpy())
            assert rows.shape == (t, BLANK + 1)
            assert _decode(rows) == expected
            n = len(expected)
            assert (rows[:n].argmax(1) < BLANK).all() and (rows[n:].argmax(1) == BLANK).all()


@pytest.fixture(scope="module")
def module(trained_run: Path):
    return build(trained_run / "checkpoints" / "last.pt", max_frames=48)


def _inputs(prepared_dir: Path, n: int = 40) -> list[np.ndarray]:
    ds = ShardDataset(prepared_dir)
    return [ds.rows(i).astype(np.float32) for i in range(min(n, len(ds)))]


def _nan_frames_inside() -> np.ndarray:
    x = np.random.default_rng(2).random((40, 200), np.float32)
    x[[5, 17, 18, 19]] = np.nan  # nothing detected in these frames: their features are all 0
    return x


EDGE_CASES = {"T=0": np.zeros((0, 200), np.float32), "T=1": np.random.default_rng(0).random((1, 200), np.float32),
              "all NaN": np.full((30, 200), np.nan, np.float32),
              "T=5000": np.random.default_rng(1).random((5000, 200), np.float32),
              "NaN frames inside": _nan_frames_inside()}


def test_inference_module_handles_edge_cases(module) -> None:
    mod, _ = module
    for name, x in EDGE_CASES.items():
        out = mod(torch.from_numpy(x)).numpy()
        assert out.ndim == 2 and out.shape[0] >= 1 and out.shape[1] == BLANK + 1, name
        assert np.isfinite(out).all(), name


def test_inference_masks_frames_with_nothing_detected_as_the_seed_does(module) -> None:
    """The seed's Masking(0.0) leaves all-zero frames out of stage 1's ECA means at inference
    too: the module computes the mask from its own features (exported with it)."""
    mod, _ = module
    x = torch.from_numpy(EDGE_CASES["NaN frames inside"])
    mod.decode = False
    try:
        assert mod.model.content_mask
        masked = mod(x)
        mod.model.content_mask = False
        unmasked = mod(x)
    finally:
        mod.decode, mod.model.content_mask = True, True
    assert (masked - unmasked).abs().max() > 1e-4


def test_inference_resizes_to_at_most_max_frames(module) -> None:
    mod, _ = module
    mod.decode = False
    try:
        assert mod(torch.from_numpy(EDGE_CASES["T=5000"])).shape[0] == 48
        assert mod(torch.from_numpy(EDGE_CASES["T=1"])).shape[0] == 1
    finally:
        mod.decode = True


@pytest.fixture(scope="module")
def onnx_models(module, tmp_path_factory):
    out = tmp_path_factory.mktemp("onnx")
    mod, _ = module
    export_onnx(mod, out / "decoded.onnx")
    mod.decode = False
    try:
        export_onnx(mod, out / "logits.onnx")
    finally:
        mod.decode = True
    return out


def test_onnx_matches_pytorch(module, onnx_models: Path, prepared_dir: Path) -> None:
    import onnxruntime as ort

    mod, _ = module
    decoded = ort.InferenceSession(str(onnx_models / "decoded.onnx"))
    logits = ort.InferenceSession(str(onnx_models / "logits.onnx"))
    same = 0
    inputs = _inputs(prepared_dir) + list(EDGE_CASES.values())
    for x in inputs:
        with torch.no_grad():
            ref = mod(torch.from_numpy(x)).numpy()
            mod.decode = False
            ref_logits = mod(torch.from_numpy(x)).numpy()
            mod.decode = True
        got = decoded.run(None, {"inputs": x})[0]
        same += _decode(got) == _decode(ref)
        np.testing.assert_allclose(logits.run(None, {"inputs": x})[0], ref_logits, atol=1e-4)
    assert same / len(inputs) >= 0.995


@needs_converter
def test_submission_is_kaggle_shaped(exported: Path) -> None:
    with zipfile.ZipFile(exported / "submission.zip") as z:
        assert sorted(z.namelist()) == ["inference_args.json", "model.tflite"]
        assert json.loads(z.read("inference_args.json")) == {"selected_columns": SELECTED_COLUMNS}
    from ai_edge_litert.interpreter import Interpreter

    for variant in ("float32", "float16", "int8"):
        it = Interpreter(str(exported / f"model_{variant}.tflite"), num_threads=1)
        assert it.get_signature_list() == {"serving_default": {"inputs": ["inputs"], "outputs": ["outputs"]}}
        runner = it.get_signature_runner("serving_default")
        for name, x in EDGE_CASES.items():
            out = runner(inputs=x)["outputs"]
            assert out.ndim == 2 and out.shape[0] >= 1 and out.shape[1] == BLANK + 1, (variant, name)


@needs_converter
def test_tflite_keeps_the_conv_blocks_in_the_time_by_channel_layout(module, exported: Path) -> None:
    """No transpose around the depthwise convs or the channel attention (they were four per conv
    block, each a copy of the [T, 768] activation): the only ones left are attention's two per
    transformer block and the input's [T, 2, 100] -> [T, 100, 2] (x and y columns to points)."""
    from collections import Counter

    from ai_edge_litert.interpreter import Interpreter

    _, cfg = module
    for variant in ("float32", "int8"):
        it = Interpreter(str(exported / f"model_{variant}.tflite"))
        ops = Counter(op["op_name"] for op in it._get_ops_details())
        assert ops["DEPTHWISE_CONV_2D"] == cfg.stages * len(cfg.kernel_sizes), variant
        assert ops["TRANSPOSE"] == 2 * cfg.stages + 1, (variant, ops)


@needs_converter
def test_tflite_float32_matches_pytorch(module, exported: Path, onnx_models: Path, prepared_dir: Path,
                                        tmp_path: Path) -> None:
    from ai_edge_litert.interpreter import Interpreter

    mod, _ = module
    runner = Interpreter(str(exported / "model_float32.tflite"), num_threads=1).get_signature_runner()
    inputs = _inputs(prepared_dir) + list(EDGE_CASES.values())
    same = sum(_decode(runner(inputs=x)["outputs"]) == _decode(mod(torch.from_numpy(x)).numpy()) for x in inputs)
    assert same / len(inputs) >= 0.995
    # the network's outputs themselves, through the same converter
    variants = convert_tflite(onnx_models / "logits.onnx", tmp_path)
    raw = Interpreter(str(variants["float32"]), num_threads=1).get_signature_runner()
    mod.decode = False
    try:
        for x in inputs[:20] + [EDGE_CASES["NaN frames inside"], EDGE_CASES["all NaN"]]:
            np.testing.assert_allclose(raw(inputs=x)["outputs"], mod(torch.from_numpy(x)).detach().numpy(), atol=1e-4)
    finally:
        mod.decode = True


@needs_converter
def test_evaluator_scores_float16_like_float32_and_runs_in_the_old_runtime(exported: Path, synth_dir: Path,
                                                                         tmp_path: Path) -> None:
    from aslfr.export import write_submission

    f32 = evaluate_submission(exported / "submission.zip", synth_dir, limit=40)
    (tmp_path / "model.tflite").write_bytes((exported / "model_float16.tflite").read_bytes())
    f16 = evaluate_submission(write_submission(tmp_path / "model.tflite", tmp_path), synth_dir, limit=40)
    assert f32["sequences"] == 40 and abs(f16["score"] - f32["score"]) <= 0.002
    old = evaluate_in_runtime(exported / "submission.zip", synth_dir, 40, "tflite-runtime")
    assert old["runtime"] == "tflite-runtime" and old["score"] == pytest.approx(f32["score"], abs=1e-9)
    assert old["latency_ms_median"] > 0 and old["projected_seconds_for_50k"] > 0


def test_evaluator_levenshtein() -> None:
    assert levenshtein("kitten", "sitting") == 3 and levenshtein("", "abc") == 3 and levenshtein("abc", "abc") == 0


def test_evaluator_names_a_bad_submission(tmp_path: Path, synth_dir: Path) -> None:
    with zipfile.ZipFile(tmp_path / "s.zip", "w") as z:
        z.writestr("inference_args.json", "{}")
    with pytest.raises(ValueError, match="no model.tflite"):
        evaluate_submission(tmp_path / "s.zip", synth_dir)


@needs_converter
def test_evaluator_names_columns_the_model_or_the_data_do_not_take(exported: Path, synth_dir: Path,
                                                                   tmp_path: Path) -> None:
    model = (exported / "model.tflite").read_bytes()
    for name, columns, says in (("short", SELECTED_COLUMNS[:100], "takes 200 values per frame, but "
                                 "inference_args.json selects 100 columns"),
                                ("renamed", [f"q_{c}" for c in SELECTED_COLUMNS], "200 of the selected "
                                 "columns are not in the file \\(first: q_x_right_hand_0")):
        path = tmp_path / f"{name}.zip"
        with zipfile.ZipFile(path, "w") as z:
            z.writestr("model.tflite", model)
            z.writestr("inference_args.json", json.dumps({"selected_columns": columns}))
        with pytest.raises(ValueError, match=says):
            evaluate_submission(path, synth_dir, limit=2)


def test_an_export_into_an_earlier_one_leaves_only_its_own_files(exported: Path, trained_run: Path,
                                                                 tmp_path: Path) -> None:
    """--onnx-only into a folder holding a full export: the old TFLite files and submission.zip go
    (they belong to another export), export.json lists exactly what is there, and nothing of the
    hidden staging folder is left."""
    import shutil

    from aslfr.export import export

    out = tmp_path / "export"
    shutil.copytree(exported, out)
    (out / "notes.txt").write_text("the user's own file")
    result = export(trained_run / "checkpoints" / "last.pt", out, max_frames=48, tflite=False, log=lambda *_: None)
    assert sorted(result["files"]) == ["model.onnx"]
    assert json.loads((out / "export.json").read_text())["files"] == result["files"]
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.onnx", "notes.txt", "web"]
    assert (out / "web" / "model.onnx").read_bytes() == (out / "model.onnx").read_bytes()  # its own site


def test_an_export_that_cannot_finish_is_one_line_and_leaves_no_export_json(trained_run: Path, tmp_path: Path,
                                                                             capsys) -> None:
    from aslfr.cli import main

    ckpt = str(trained_run / "checkpoints" / "last.pt")
    assert main(["export", "--checkpoint", ckpt, "--out", str(tmp_path / "a"), "--max-frames", "-5"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == ("aslfr export: error: --max-frames -5: expected a whole number of frames from 1 to 100000")
    assert not (tmp_path / "a").exists()
    out = tmp_path / "b"
    (out / "model.onnx").mkdir(parents=True)  # a directory where the model must go: cannot be replaced
    assert main(["export", "--checkpoint", ckpt, "--out", str(out), "--onnx-only", "--max-frames", "48"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and str(out / "model.onnx") in err[0] and ".tmp" not in err[0] and ".export-" not in err[0]
    assert not (out / "export.json").exists() and [p.name for p in out.iterdir()] == ["model.onnx"]
