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
