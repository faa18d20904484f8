import pytest
import torch
import torch.nn.functional as F

from aslfr.config import Config, preset
from aslfr.model import (ECA, BatchNorm, Conv1DBlock, FingerspellingModel, LateDropout, count_parameters,
                         flops_per_sequence)


@pytest.mark.parametrize("name, expected", [("seed-base", 9_497_577), ("seed-final", 15_447_303)])
def test_seed_presets_have_the_seeds_parameter_counts(name: str, expected: int) -> None:
    assert count_parameters(FingerspellingModel(preset(name))) == expected


def test_flop_count_matches_the_seed_figures() -> None:
    assert flops_per_sequence(preset("seed-final"), 320) / 1e9 == pytest.approx(10.6, abs=0.1)
    assert 3 * flops_per_sequence(preset("seed-base"), 380) / 1e9 == pytest.approx(24, abs=0.6)


def test_seed_presets_keep_the_improvements_off() -> None:
    for name in ("seed-base", "seed-final"):
        cfg = preset(name)
        assert not (cfg.mask_padding or cfg.ctc_true_lengths or cfg.pad_to_batch)
        assert cfg.split == "file" and cfg.seed == 42 and cfg.radam_threshold == 4
    final = preset("seed-final")
    assert (final.stages, final.max_len, final.batch_size, final.epochs) == (5, 340, 256, 1500)
    assert (final.late_dropout, final.late_dropout_start_epoch, final.train_filter) == (0.8, 15, "score")


def test_unknown_setting_is_rejected_with_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown setting; valid settings: .*max_len"):
        Config().override(["max_length=3"])
    assert Config().override(["max_len=12", "mask_padding=true", "kernel_sizes=5,3"]).kernel_sizes == (5, 3)


def test_time_axis_is_free_and_causal_convs_do_not_look_ahead() -> None:
    cfg = preset("demo").override(["stages=1"])
    model = FingerspellingModel(cfg).eval()
    x = torch.randn(1, 40, 600)
    for t in (1, 2, 7, 40):
        assert model(x[:, :t]).shape == (1, t, 60)
    # The depthwise convs are causal: a change at frame 30 cannot move earlier frames.
    block = model.stages[0][0]
    h = torch.randn(1, 40, 2 * cfg.dim)
    h2 = h.clone()
    h2[:, 30] += 5
    a, b = block.causal_conv(h), block.causal_conv(h2)
    assert torch.equal(a[:, :30], b[:, :30]) and not torch.equal(a[:, 30:], b[:, 30:])


def test_export_shaped_convs_are_the_plain_1d_convs() -> None:
    """The causal depthwise conv and the channel-attention conv run as 2-D convs laid out for
    the export; they must compute the textbook 1-D convs on the same weights."""
    torch.manual_seed(0)
    for k in (11, 7, 3):
        block = Conv1DBlock(16, k, expand=2, drop=0.0)
        h = torch.randn(3, 21, 32)
        plain = F.conv1d(F.pad(h.transpose(1, 2), (k - 1, 0)), block.depthwise.weight, groups=32).transpose(1, 2)
        torch.testing.assert_close(block.causal_conv(h), plain, atol=1e-6, rtol=1e-5)
    eca = ECA()
    x = torch.randn(3, 21, 32)
    plain = x * torch.sigmoid(F.conv1d(x.mean(1, keepdim=True), eca.conv.weight, padding=2))
    torch.testing.assert_close(eca(x), plain, atol=1e-6, rtol=1e-5)


def test_padding_mask_makes_outputs_independent_of_padding() -> None:
    cfg = preset("demo").override(["mask_padding=true"])
    model = FingerspellingModel(cfg).eval()
    x = torch.randn(1, 20, 600)
    padded = torch.cat([x, torch.zeros(1, 15, 600)], 1)
    a = model(x, torch.tensor([20]))
    b = model(padded, torch.tensor([20]))[:, :20]
    assert torch.allclose(a, b, atol=1e-5)


def test_batchnorm_matches_torch_in_training_and_eval() -> None:
    ours, ref = BatchNorm(8), torch.nn.BatchNorm1d(8, momentum=0.05, eps=1e-3)
    x = torch.randn(4, 10, 8) * 3 + 1
    torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ours.running_mean, ref.running_mean)
    ours.eval()
    ref.eval()
    ref.running_var.copy_(ours.running_var)  # ours keeps Keras' biased variance
    torch.testing.assert_close(ours(x), ref(x.transpose(1, 2)).transpose(1, 2), rtol=1e-5, atol=1e-5)


def test_late_dropout_starts_at_its_step() -> None:
    drop = LateDropout(0.5, start_step=3).train()
    x = torch.ones(1000)
    outs = [drop(x) for _ in range(5)]
    assert all(torch.equal(o, x) for o in outs[:3])
    assert all((o == 0).float().mean() > 0.3 for o in outs[3:])
    assert int(drop.step) == 5
    assert torch.equal(drop.eval()(x), x)


def test_final_late_dropout_starts_at_epoch_15() -> None:
    model = FingerspellingModel(preset("seed-final").override(["stages=1"]), steps_per_epoch=10)
    assert model.late_dropout.start_step == 150 and model.late_dropout.rate == 0.8


@pytest.mark.parametrize("setting, says", [("batch_size=0", "batch_size=0: must be at least 1"),
                                           ("heads=5", "heads=5: the width dim=384 must split evenly"),
                                           ("epochs=-1", "epochs=-1: must be at least 1"),
                                           ("branch_dropout=1.5", "branch_dropout=1.5: expected a rate"),
                                           ("bn_group=24", "bn_group=24: each process's share")])
def test_settings_that_cannot_train_are_named(setting: str, says: str, capsys) -> None:
    from aslfr.cli import main

    with pytest.raises(ValueError, match=says.replace("(", "\\(")):
        preset("seed-base").override([setting]).check()
    assert main(["info", "--preset", "seed-base", "--set", setting]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and says in err
