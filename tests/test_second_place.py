"""The 2nd place's network, losses and decoders pinned to its own notebook code's outputs
(fixtures/second_place/, computed with TensorFlow 2.15 / Keras 2.15 in float32; their README
gives the semantics and the tolerances used here). Float32 throughout."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aslfr.ctc_attention import (CTCAttentionModel, CTCAttentionNet, attention_loss, count_parameters, ctc_loss,
                                 preprocess)
from aslfr.decoding import decode
from aslfr.keras_import import second_place_state_dict

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "second_place"
LAYERS = "CCCTCCCTDCCCTCCCT"


def _model(h5: str = "second_place_network.h5", **settings) -> tuple[CTCAttentionModel, dict[str, str]]:
    arch, sd, sources = second_place_state_dict(FIXTURES / h5, LAYERS)
    model = CTCAttentionModel(CTCAttentionNet(**arch, bn_group=0, **settings))
    model.load_state_dict(sd)
    return model, sources


@pytest.fixture(scope="module")
def ref() -> dict:
    with np.load(FIXTURES / "second_place_network.npz") as z:
        return {k: z[k] for k in z.files}


def _close(ours: torch.Tensor, theirs: np.ndarray, mask: np.ndarray, tol: float) -> None:
    a, b = ours.detach().numpy()[mask.astype(bool)], theirs[mask.astype(bool)]
    bad = np.abs(a - b) > tol + tol * np.abs(b)
    assert not bad.any(), f"{bad.sum()} values off; worst {np.abs(a - b).max():.2e}"


def test_the_network_has_the_2nd_places_parameters() -> None:
    model = CTCAttentionModel(CTCAttentionNet())
    assert count_parameters(model) == (6_366_525, 6_336_957)
    assert sum(p.numel() for p in model.ctc.parameters()) == 320_318


def test_preprocessing_matches_the_notebooks(ref: dict) -> None:
    """Frame dropping, the handedness flip, the per-channel normalisation and the layout."""
    for i in range(3):
        raw = torch.from_numpy(ref[f"raw_landmarks_{i}"])
        ours = preprocess(raw)
        n = int(ref["frame_lengths"][i])
        assert ours.shape == (n, 1629)
        np.testing.assert_allclose(ours.numpy(), ref["encoder_inputs"][i, :n], atol=1e-5, rtol=1e-5)


def test_eval_outputs_with_padding_match(ref: dict) -> None:
    model, _ = _model()
    model.eval()
    x, tokens = torch.from_numpy(ref["encoder_inputs"]), torch.from_numpy(ref["decoder_inputs"]).long()
    lengths = torch.from_numpy(ref["frame_lengths"]).long()
    with torch.no_grad():
        memory, mask, _ = model.encode(x, lengths)
        att, ctc = model(x, tokens, lengths)
    assert mask.int().numpy().tolist() == ref["encoder_mask"].tolist()
    _close(memory, ref["eval_encoder_out"], ref["encoder_mask"], 5e-4)
    _close(att, ref["eval_att_logits"], ref["token_mask"], 5e-4)
    _close(ctc, ref["eval_ctc_logits"], ref["encoder_mask"], 5e-4)
    targets = torch.from_numpy(ref["att_targets"])
    assert attention_loss(att, targets).item() == pytest.approx(float(ref["loss_att"]), rel=1e-5)
    ctc_targets = torch.from_numpy(ref["ctc_targets"])
    valid = torch.from_numpy(ref["ctc_logit_lengths"])
    assert ctc_loss(ctc, ctc_targets, valid).item() == pytest.approx(float(ref["loss_ctc"]), rel=1e-5)
    # what the 2nd place optimised under bf16: every sequence at its padded length
    assert ctc_loss(ctc, ctc_targets, None).item() == pytest.approx(float(ref["loss_ctc_unmasked"]), rel=1e-5)


def test_a_sequence_alone_gives_what_it_gives_padded(ref: dict) -> None:
    """The masks make a padded batch's valid outputs those of each sequence alone."""
    model, _ = _model()
    model.eval()
    n = int(ref["frame_lengths"][0])
    x = torch.from_numpy(ref["encoder_inputs"][:1, :n])
    with torch.no_grad():
        memory, _, _ = model.encode(x)
    _close(memory, ref["eval_encoder_out"][:1, : (n + 1) // 2], np.ones((1, (n + 1) // 2)), 5e-4)


def test_training_mode_outputs_and_batchnorm_statistics_match(ref: dict) -> None:
    """Masked BatchNorm statistics in training (valid frames and tokens only, pooled over the
    batch), momentum 0.95; dropout off, as the fixture's rates are 0."""
    x, tokens = torch.from_numpy(ref["encoder_inputs"]), torch.from_numpy(ref["decoder_inputs"]).long()
    lengths = torch.from_numpy(ref["frame_lengths"]).long()
    encoder_only, _ = _model(block_dropout=0.0, attention_dropout=0.0, head_dropout=0.0)
    memory, _, _ = encoder_only.train().encode(x, lengths)
    _close(memory, ref["train_encoder_out"], ref["encoder_mask"], 1e-4)

    model, sources = _model(block_dropout=0.0, attention_dropout=0.0, head_dropout=0.0)
    att, ctc = model.train()(x, tokens, lengths)  # one call of the whole model: one update per layer
    _close(att, ref["train_att_logits"], ref["token_mask"], 1e-4)
    _close(ctc, ref["train_ctc_logits"], ref["encoder_mask"], 1e-4)
    total = 0.75 * attention_loss(att, torch.from_numpy(ref["att_targets"])) + 0.25 * ctc_loss(
        ctc, torch.from_numpy(ref["ctc_targets"]), torch.from_numpy(ref["ctc_logit_lengths"]))
    assert total.item() == pytest.approx(float(ref["train_loss_total"]), rel=1e-5)
    state = model.state_dict()
    assert len(sources) == 76  # 38 BatchNormalization layers' two statistics
    for key, h5_path in sources.items():
        np.testing.assert_allclose(state[key].numpy(), ref[f"bn_after_train/{h5_path}"], atol=1e-5, rtol=1e-5,
                                   err_msg=key)


# --------------------------------------------------------------------------------------------
# decoders (the inference notebook's, on raw sequences)
# --------------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def decoding_ref() -> dict:
    with np.load(FIXTURES / "second_place_decoding.npz") as z:
        return {k: z[k] for k in z.files}


@pytest.fixture(scope="module")
def models() -> dict[str, CTCAttentionModel]:
    return {"a": _model()[0].eval(), "b": _model("second_place_network_b.h5")[0].eval()}


def _features(frames: np.ndarray) -> torch.Tensor:
    """The notebook's wrapper: [T, 1629] columns (x block, y block, z block) -> [T, 543, 3], one
    all-zero frame for T = 0, then preprocessing with TensorFlow's float32 summation order (its
    round-off in the statistics of the 768-frame case moves logits by more than that case's
    decision margins)."""
    x = torch.from_numpy(frames).reshape(-1, 3, 543).transpose(1, 2)
    if x.shape[0] == 0:
        x = torch.zeros(1, 543, 3)
    return preprocess(x, tf_sums=True)


DECODERS = {"ctc_greedy_a": ("ctc", "a", 0.0), "att_greedy_a": ("attention", "a", 0.0),
            "joint_w02_a": ("joint", "a", 0.2), "joint_w03_a": ("joint", "a", 0.3),
            "ctc_greedy_b": ("ctc", "b", 0.0), "att_greedy_b": ("attention", "b", 0.0),
            "joint_w02_b": ("joint", "b", 0.2), "joint_w02_ab": ("joint", "ab", 0.2),
            "joint_w03_ab": ("joint", "ab", 0.3)}


@pytest.mark.parametrize("name", list(DECODERS))
def test_the_notebooks_decoders_are_reproduced_with_their_quirks(name: str, decoding_ref: dict, models: dict) -> None:
    decoding, which, weight = DECODERS[name]
    ok = decoding_ref[f"{name}/ok"]
    for i in range(len(decoding_ref["case_names"])):
        features = _features(decoding_ref[f"frames_{i}"])
        assert features.shape[0] == decoding_ref["preprocessed_lengths"][i]
        if not ok[i]:  # the notebook raised (no frame left for its GRU); here: nothing decoded
            assert decode([models[c] for c in which], features, decoding, weight, quirks=True) in ([], [60])
            continue
        ids = decode([models[c] for c in which], features, decoding, weight, quirks=True)
        assert ids == decoding_ref[f"{name}/tokens_{i}"].tolist(), (decoding_ref["case_names"][i], ids)


def test_ctc_logits_of_raw_sequences_match(decoding_ref: dict, models: dict) -> None:
    for i in range(len(decoding_ref["case_names"])):
        key = f"ctc_logits_a_{i}"
        if key not in decoding_ref:
            continue
        with torch.no_grad():
            memory, _, _ = models["a"].encode(_features(decoding_ref[f"frames_{i}"])[None])
            logits = models["a"].ctc(memory)[0]
        _close(logits, decoding_ref[key], np.ones(decoding_ref[key].shape, bool), 5e-4)


# --------------------------------------------------------------------------------------------
# the decoders' correct defaults
# --------------------------------------------------------------------------------------------

def test_ctc_greedy_keeps_the_final_run_unless_asked_for_the_quirk() -> None:
    from aslfr.decoding import ctc_greedy

    frames = torch.nn.functional.one_hot(torch.tensor([1, 1, 0, 2, 2, 0, 2]), 4).float()
    assert ctc_greedy(frames) == [1, 2, 2]
    assert ctc_greedy(frames, quirks=True) == [1, 2]          # the last run is never emitted
    assert ctc_greedy(frames[:1], quirks=True) == [] and ctc_greedy(frames[:1]) == [1]


def _collapse(path: tuple[int, ...]) -> list[int]:
    return [x for i, x in enumerate(path) if x != 0 and (i == 0 or x != path[i - 1])]


@pytest.mark.parametrize("prefix", [[], [1], [1, 1], [2, 1]])
def test_the_exact_prefix_score_is_the_sum_over_alignments(prefix: list[int]) -> None:
    """psi(g + c) = the probability that the frames start with g + c (c first emitted at some
    frame), and psi(EOS) that all frames collapse to g: brute force over every path of a small
    random P. The 2nd place's variant leaves out the alignments that end g + c at frame k."""
    import itertools

    from aslfr.decoding import _PrefixScorer

    torch.manual_seed(len(prefix))
    L, V = 5, 5  # ids: 0 blank, 1 and 2 characters, 3 SOS, 4 EOS
    P = torch.log_softmax(torch.randn(L, V, dtype=torch.float64), -1)
    P[:, 3:] = -1e30  # SOS and EOS are never a frame's label
    scorer = _PrefixScorer(P)
    for k, token in enumerate(prefix):
        _, rn, rb = scorer.scores(k, prefix[k - 1] if k else None, 4, quirks=False)
        scorer.advance(rn, rb, token)
    psi, _, _ = scorer.scores(len(prefix), prefix[-1] if prefix else None, 4, quirks=False)
    prob = P.exp()
    for c in (1, 2):
        want = 0.0
        for t in range(L):
            for path in itertools.product(range(3), repeat=t + 1):
                if path[t] == c and _collapse(path[:t]) == prefix and _collapse(path) == prefix + [c]:
                    want += float(torch.prod(prob[torch.arange(t + 1), torch.tensor(path)]))
        assert psi[c].exp().item() == pytest.approx(want, rel=1e-9, abs=1e-300), c
    full = sum(float(torch.prod(prob[torch.arange(L), torch.tensor(p)]))
               for p in itertools.product(range(3), repeat=L) if _collapse(p) == prefix)
    assert psi[4].exp().item() == pytest.approx(full, rel=1e-9, abs=1e-300)


# --------------------------------------------------------------------------------------------
# the recipe: data with every landmark, augmentations, schedule, AWP, training and resuming
# --------------------------------------------------------------------------------------------

JOINT_TINY = ["dim=32", "heads=2", "expand=2", "layers=CTDCT", "kernel_sizes=5", "max_len=96", "batch_size=8",
              "epochs=2", "eval_every=2", "checkpoint_every=1", "workers=0", "warmup_epochs=1", "bf16=false",
              "awp_start_epoch=1", "val_fraction=0.2", "augment=true"]


@pytest.fixture(scope="module")
def prepared_all(synth_dir: Path, tmp_path_factory) -> Path:
    from aslfr.data.prepare import prepare

    out = tmp_path_factory.mktemp("prepared_all")
    prepare(synth_dir, out, progress=False, landmarks="all")
    return out


def test_the_presets_are_the_2nd_places_network() -> None:
    from aslfr.config import preset
    from aslfr.joint_training import build_model

    cfg = preset("second-place")
    assert count_parameters(build_model(cfg)) == (6_366_525, 6_336_957)
    assert (cfg.batch_size, cfg.bn_group, cfg.max_len, cfg.epochs, cfg.lr, cfg.warmup_epochs) == (128, 16, 768, 400,
                                                                                                   4e-3, 40)
    assert (cfg.ctc_loss_weight, cfg.label_smoothing, cfg.weight_decay, cfg.awp_lr, cfg.awp_start_epoch) == (
        0.25, 0.25, 0.01, 0.2, 40)
    assert cfg.bf16 == "true" and not cfg.ctc_true_lengths  # as it trained: padded CTC lengths under bf16
    assert build_model(preset("second-place-demo")).net.layers.count("D") == 1


def test_all_landmarks_are_prepared_in_the_competitions_layout(synth_dir: Path, prepared_all: Path,
                                                               prepared_dir: Path) -> None:
    import pyarrow.parquet as pq

    from aslfr.data.shards import ShardDataset
    from aslfr.landmarks import LANDMARK_COLUMNS

    ds = ShardDataset(prepared_all)
    i = 5
    sid, fid = int(ds.meta["sequence_id"][i]), int(ds.meta["file_id"][i])
    path = next(p for p in (synth_dir / "train_landmarks").glob("*.parquet") if p.stem == str(fid))
    table = pq.read_table(path, filters=[("sequence_id", "==", sid)])
    rows = np.stack([table.column(c).to_numpy() for c in LANDMARK_COLUMNS], 1).astype(np.float32)  # [T, 1629]
    np.testing.assert_array_equal(ds.landmarks(i), rows.reshape(-1, 3, 543).transpose(0, 2, 1))
    seed_only = ShardDataset(prepared_dir)  # the same data prepared with the seed's landmarks only
    j = int(np.flatnonzero(seed_only.meta["sequence_id"] == sid)[0])
    np.testing.assert_array_equal(ds.coords(i), seed_only.coords(j))  # the seed's view is the same
    np.testing.assert_array_equal(np.load(prepared_all / "stats.npz")["mean"], np.load(prepared_dir / "stats.npz")["mean"])


def test_a_seed_prepared_directory_is_refused_naming_the_option(prepared_dir: Path, tmp_path: Path, capsys) -> None:
    from aslfr.cli import main

    assert main(["train", "--preset", "second-place-demo", "--data", str(prepared_dir), "--out", str(tmp_path / "r"),
                 *sum((["--set", x] for x in JOINT_TINY), [])]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "prepare with --landmarks all" in err, err
    assert main(["prepare", str(prepared_dir), str(tmp_path / "p"), "--landmarks", "all"]) == 2  # not a dataset


@pytest.mark.skipif(not (Path(__file__).resolve().parents[1] / ".tools" / "onnx2tf" / "bin" / "python").is_file(),
                    reason="the converter environment (with TensorFlow) is missing: run 'make tools'")
def test_the_temporal_resample_is_tensorflows(tmp_path: Path) -> None:
    """tf.image.resize along time (bilinear, bicubic, nearest), NaNs included, against TensorFlow
    itself (the converter environment's)."""
    import subprocess

    from aslfr.augment_all import resize_time
    from aslfr.export import converter_python

    rng = np.random.default_rng(0)
    cases = []
    for t, new in [(23, 11), (23, 40), (5, 1), (300, 451), (1, 3)]:
        x = rng.random((t, 543, 3)).astype(np.float32)
        x[min(3, t - 1), 10] = np.nan
        x[0, 0] = np.nan
        cases.append((x, new))
        np.save(tmp_path / f"x{len(cases)}.npy", x)
    script = ("import sys, numpy as np, tensorflow as tf\n"
              "for k in range(1, len(sys.argv) - 1):\n"
              "    x = np.load(f'{sys.argv[1]}/x{k}.npy'); new = int(sys.argv[k + 1])\n"
              "    np.savez(f'{sys.argv[1]}/y{k}.npz', **{m: tf.image.resize(x, (new, 543), m).numpy()\n"
              "                                          for m in ('bilinear', 'bicubic', 'nearest')})\n")
    subprocess.run([str(converter_python()), "-c", script, str(tmp_path), *[str(n) for _, n in cases]], check=True,
                   capture_output=True, env={"TF_CPP_MIN_LOG_LEVEL": "3", "PATH": "/usr/bin:/bin"})
    for k, (x, new) in enumerate(cases, 1):
        with np.load(tmp_path / f"y{k}.npz") as ref:
            for method in ("bilinear", "bicubic", "nearest"):
                ours, theirs = resize_time(x, new, method), ref[method]
                assert (np.isnan(ours) == np.isnan(theirs)).all(), (k, method)
                np.testing.assert_allclose(ours, theirs, atol=1e-6, rtol=0, err_msg=f"{k} {method}")


def test_token_replacement_keeps_sos_and_replaces_a_fifth() -> None:
    from aslfr.augment_all import replace_tokens

    tokens = np.array([60, *range(1, 11), 0, 0])
    changed = []
    for seed in range(50):
        out = replace_tokens(tokens, np.random.default_rng(seed), 0.2, 59, (0, 60, 61))
        assert out[0] == 60 and (out[11:] == 0).all()  # SOS and pad are never chosen
        assert ((out[1:] >= 0) & (out[1:] <= 59)).all()  # replacements are pad or a character
        changed.append(int((out[1:11] != tokens[1:11]).sum()))
    # ceil(0.2 * 10) = 2 positions a sequence; a chosen one keeps its id with odds 1 in 60
    assert max(changed) == 2 and sum(changed) >= 0.95 * 2 * 50
    assert (replace_tokens(tokens, np.random.default_rng(0), 0.0, 59, (0, 60, 61)) == tokens).all()


def test_the_one_cycle_schedule_and_what_awp_moves() -> None:
    from aslfr.config import preset
    from aslfr.joint_training import awp_parameters, build_model, learning_rate

    cfg = preset("second-place")
    s = 420  # fold 0's steps per epoch
    assert learning_rate(0, s, cfg) == 0.0
    assert learning_rate(20 * s, s, cfg) == pytest.approx(2e-3)
    assert learning_rate(40 * s, s, cfg) == pytest.approx(4e-3)
    assert learning_rate(220 * s, s, cfg) == pytest.approx(1e-6 + 0.5 * (4e-3 - 1e-6))
    assert learning_rate(400 * s, s, cfg) == pytest.approx(1e-6) == learning_rate(500 * s, s, cfg)
    model = build_model(cfg)
    moved = {id(p) for p in awp_parameters(model)}
    names = {n for n, p in model.named_parameters() if id(p) in moved}
    assert "encoder.stem.weight" in names and "decoder.token.weight" in names
    assert not any(n.endswith("bias") or ".gru." in n or "bn" in n.split(".")[-2] for n in names)


def test_the_recipe_trains_resumes_bit_for_bit_and_scores(prepared_all: Path, tmp_path: Path) -> None:
    from aslfr.checkpoints import load_model, read_checkpoint
    from aslfr.config import preset
    from aslfr.train import train

    cfg = preset("second-place-demo").override(JOINT_TINY)
    whole = train(cfg, prepared_all, tmp_path / "whole", progress=False)
    train(cfg, prepared_all, tmp_path / "parts", progress=False, stop_after_epochs=1)
    parts = train(cfg, prepared_all, tmp_path / "parts", progress=False)
    assert whole == {**parts, "epoch_seconds": whole["epoch_seconds"]}
    a = read_checkpoint(tmp_path / "whole" / "checkpoints" / "last.pt")["model"]
    b = read_checkpoint(tmp_path / "parts" / "checkpoints" / "last.pt")["model"]
    assert all(torch.equal(a[k], b[k]) for k in a)
    model, loaded, _ = load_model(tmp_path / "whole" / "checkpoints" / "last.pt")
    assert isinstance(model, CTCAttentionModel) and loaded.network == "ctc-attention"
    assert np.isfinite(whole["loss"]) and "val_score" in whole


def test_import_keras_reads_the_2nd_places_h5_into_a_checkpoint(tmp_path: Path, capsys, ref: dict) -> None:
    """A user with the 2nd place's published `*-last.h5` gets an aslfr checkpoint: the same
    network, the same eval outputs."""
    from aslfr.checkpoints import load_model
    from aslfr.cli import main

    out = tmp_path / "second.pt"
    assert main(["import-keras", str(FIXTURES / "second_place_network.h5"), "--out", str(out)]) == 0
    assert "the 2nd place's network, width 192, layers CCCTCCCTDCCCTCCCT" in capsys.readouterr().out
    model, cfg, _ = load_model(out)
    assert cfg.network == "ctc-attention" and cfg.bn_group == 16
    x, lengths = torch.from_numpy(ref["encoder_inputs"]), torch.from_numpy(ref["frame_lengths"]).long()
    with torch.no_grad():
        _, ctc = model(x, torch.from_numpy(ref["decoder_inputs"]).long(), lengths)
    _close(ctc, ref["eval_ctc_logits"], ref["encoder_mask"], 5e-4)
    assert main(["import-keras", str(FIXTURES / "second_place_network.h5"), "--out", str(out), "--preset",
                 "seed-base"]) == 2
    assert "another family's" in capsys.readouterr().err


def test_the_pipeline_runs_with_the_2nd_places_presets(synth_dir: Path, tmp_path: Path, capsys) -> None:
    """prepare (every landmark) -> base -> score -> final (score filter) -> control -> report;
    then the final model's on-device export."""
    import json

    from aslfr.cli import main

    out = tmp_path / "run"
    argv = ["pipeline", "--data", str(synth_dir), "--out", str(out), "--preset", "second-place-demo", "--no-export",
            "--min-score", "-50", *sum((["--set", x] for x in JOINT_TINY), [])]
    assert main(argv) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert (out / "prepared" / "options.json").read_text().count('"all"') == 1
    assert json.loads((out / "final" / "config.json").read_text())["train_filter"] == "score"
    assert json.loads((out / "control" / "config.json").read_text())["train_filter"] == "frames"
    assert summary and (out / "report.md").is_file()
    capsys.readouterr()
    # the final model exports (CTC here: the unrolled attention and joint graphs take minutes)
    assert main(["export", "--checkpoint", str(out / "final" / "checkpoints" / "last.pt"), "--out",
                 str(tmp_path / "e"), "--decoding", "ctc", "--onnx-only", "--no-web"]) == 0
    assert json.loads((tmp_path / "e" / "export.json").read_text())["decoding"] == "ctc"
    assert (tmp_path / "e" / "model.onnx").is_file()


def test_the_default_decoders_emit_only_characters_then_eos(decoding_ref: dict, models: dict) -> None:
    """Without the quirks: no pad or SOS after the start, EOS last unless the step limit came
    first; an input with no landmark at all decodes to nothing."""
    for i in range(len(decoding_ref["case_names"])):
        features = _features(decoding_ref[f"frames_{i}"])
        for decoding in ("attention", "joint"):
            ids = decode([models["a"], models["b"]], features, decoding, 0.3)
            assert ids[0] == 60 and all(1 <= t <= 59 for t in ids[1:-1]), (i, decoding, ids)
            assert ids[-1] == 61 or len(ids) - 1 == min(64, (features.shape[0] + 1) // 2) or len(ids) == 1
        assert all(1 <= t <= 61 for t in decode([models["a"]], features, "ctc"))
    empty = torch.zeros(0, 1629)
    assert decode([models["a"]], empty, "joint") == [60] and decode([models["a"]], empty, "ctc") == []


def test_a_pipeline_switched_to_the_2nd_places_preset_prepares_again(synth_dir: Path, tmp_path: Path) -> None:
    """The prepare stage's fingerprint names the landmarks it keeps: a run directory prepared for
    the seed's presets is not reused for the 2nd place's (which needs every landmark)."""
    from aslfr.pipeline import Pipeline, PipelineSettings

    seed = Pipeline(PipelineSettings(synth_dir, tmp_path, preset="demo"))
    second = Pipeline(PipelineSettings(synth_dir, tmp_path, preset="second-place-demo"))
    assert (seed.landmarks, second.landmarks) == ("seed", "all")
    assert seed.fingerprint("prepare") != second.fingerprint("prepare")
    assert "landmarks" not in seed._settings("prepare")  # the seed's runs keep their fingerprints
