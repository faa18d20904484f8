"""The seed presets compute the seed's own network and optimiser: pinned to reference outputs of
the seed's Keras 2 code (../shared/fixtures, README there) within its stated tolerances."""

from __future__ import annotations

import dataclasses
import os
import socket
from pathlib import Path

import numpy as np
import pytest
import torch

from aslfr.config import preset
from aslfr.keras_import import keras_state_dict
from aslfr.model import BatchNorm, FingerspellingModel
from aslfr.optim import Lookahead, RAdam, learning_rate

FIXTURES = Path(__file__).resolve().parents[2] / "shared" / "fixtures"
H5 = FIXTURES / "seed_keras_network.h5"


@pytest.fixture(scope="module")
def reference() -> dict:
    with np.load(FIXTURES / "seed_keras_network.npz") as d:
        return {k: d[k] for k in d.files}


@pytest.fixture(scope="module")
def imported(reference: dict):
    cfg, sd = keras_state_dict(H5, preset("seed-final"))
    assert (cfg.dim, cfg.stages, cfg.heads) == (int(reference["dim"]), int(reference["n_stages"]),
                                                int(reference["num_heads"]))
    return cfg, sd


def _model(cfg, sd, **changes) -> FingerspellingModel:
    model = FingerspellingModel(dataclasses.replace(cfg, **changes))
    model.load_state_dict(sd, strict=True)
    return model


def test_every_h5_weight_maps_onto_the_network(imported, reference: dict) -> None:
    cfg, sd = imported
    n_h5 = len(reference["h5_names"])
    # each h5 weight is one of ours; ours also hold the late-dropout counter, as the h5 does
    assert len(sd) == n_h5 and int(reference["n_classes"]) == sd["head_out.bias"].numel()
    assert cfg.kernel_sizes == (11, 7, 3) and cfg.expand == 2


@pytest.mark.parametrize("case", ["eval", "eval_padded"])
def test_inference_matches_keras(imported, reference: dict, case: str) -> None:
    """eval_padded has an all-zero frame inside sample 0 and padding after sample 1: the content
    mask leaves both out of the stem's and stage 1's ECA means."""
    model = _model(*imported).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(reference[f"x_{case}"])).numpy()
    np.testing.assert_allclose(out, reference[f"logits_{case}"], atol=1e-4, rtol=1e-4)


def test_without_the_content_mask_the_padded_case_differs(imported, reference: dict) -> None:
    model = _model(*imported, content_mask=False).eval()
    with torch.no_grad():
        out = model(torch.from_numpy(reference["x_eval_padded"])).numpy()
    assert np.abs(out - reference["logits_eval_padded"]).max() > 1e-2


def test_training_step_and_batchnorm_statistics_match_keras(imported, reference: dict) -> None:
    """Training mode, dropout off, a padded batch of 4 in one Keras replica (one BN group)."""
    model = _model(*imported, branch_dropout=0.0, attention_dropout=0.0, late_dropout=0.0, bn_group=4).train()
    out = model(torch.from_numpy(reference["x_train"])).detach().numpy()
    np.testing.assert_allclose(out, reference["logits_train"], atol=1e-4, rtol=1e-4)
    bns = {"stem_bn": model.stem_bn}
    n = 0
    for stage in model.stages:
        for block in stage[:-1]:
            n += 1
            bns[f"{n}_bn"] = block.bn
    assert n == 15
    for name, bn in bns.items():
        for ours, theirs in (("running_mean", "moving_mean"), ("running_var", "moving_variance")):
            np.testing.assert_allclose(getattr(bn, ours).numpy(), reference[f"bn_after_train__{name}__{theirs}"],
                                       atol=1e-5, rtol=0, err_msg=f"{name} {ours}")


def test_grouped_batchnorm_is_each_group_on_its_own() -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 10, 6) * 2 + 1
    mask = torch.rand(8, 10) > 0.3
    grouped = BatchNorm(6, group=4).train()
    halves = [BatchNorm(6).train(), BatchNorm(6).train()]
    out = grouped(x, mask)
    for k, bn in enumerate(halves):
        torch.testing.assert_close(out[4 * k:4 * k + 4], bn(x[4 * k:4 * k + 4], mask[4 * k:4 * k + 4]))
    torch.testing.assert_close(grouped.running_mean, (halves[0].running_mean + halves[1].running_mean) / 2)
    torch.testing.assert_close(grouped.running_var, (halves[0].running_var + halves[1].running_var) / 2)
    with pytest.raises(ValueError, match="does not split into BatchNorm groups of 4.*bn_group"):
        grouped(x[:6])


def test_masked_batchnorm_ignores_masked_frames() -> None:
    torch.manual_seed(1)
    x = torch.randn(3, 12, 5)
    mask = torch.ones(3, 12, dtype=torch.bool)
    mask[1, 7:] = False
    bn = BatchNorm(5).train()
    moved = x.clone()
    moved[1, 7:] = 1e3  # what masked frames hold cannot matter to the statistics
    a, b = bn(x, mask), BatchNorm(5).train()(moved, mask)
    torch.testing.assert_close(a[mask], b[mask])
    real = x[mask]
    torch.testing.assert_close(bn.running_mean, 0.05 * real.mean(0))
    torch.testing.assert_close(bn.running_var, 0.95 + 0.05 * real.var(0, unbiased=False))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _grouped_worker(rank: int, world: int, port: int, x: torch.Tensor, mask: torch.Tensor, out_dir: str) -> None:
    import torch.distributed as dist

    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    share = x.shape[0] // world
    bn = BatchNorm(x.shape[-1], group=2).train()
    part = slice(rank * share, (rank + 1) * share)
    out = bn(x[part], mask[part])
    torch.save({"out": out.detach(), "mean": bn.running_mean, "var": bn.running_var},
               Path(out_dir) / f"{rank}.pt")
    dist.destroy_process_group()


def test_grouped_batchnorm_is_the_same_over_two_processes(tmp_path: Path) -> None:
    import torch.multiprocessing as mp

    torch.manual_seed(2)
    x, mask = torch.randn(8, 9, 4) * 3, torch.rand(8, 9) > 0.2
    one = BatchNorm(4, group=2).train()
    ref = one(x, mask)
    mp.spawn(_grouped_worker, args=(2, _free_port(), x, mask, str(tmp_path)), nprocs=2, join=True)
    parts = [torch.load(tmp_path / f"{r}.pt") for r in range(2)]
    torch.testing.assert_close(torch.cat([p["out"] for p in parts]), ref)
    for p in parts:  # every process holds the mean over all four groups
        torch.testing.assert_close(p["mean"], one.running_mean)
        torch.testing.assert_close(p["var"], one.running_var)


def test_seed_presets_use_the_seeds_masking_and_per_core_groups() -> None:
    base, final = preset("seed-base"), preset("seed-final")
    assert base.content_mask and final.content_mask
    assert (base.bn_group, base.batch_size // 8) == (16, 16)
    assert (final.bn_group, final.batch_size // 8) == (32, 32)
    for world in (1, 2, 4, 8):  # whole groups per process on 1-8 processes
        base.check(world)
        final.check(world)
    with pytest.raises(ValueError, match="bn_group=32: each process's share of the batch \\(256 / 16 processes = 16\\)"):
        final.check(16)


# --------------------------------------------------------------------------------------------
# The optimiser: tfa Lookahead(RectifiedAdam(sma_threshold=4), sync_period=5) under the seed's
# schedule, replayed from the fixture's initial weights
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("lookahead", [True, False])
def test_optimiser_trajectory_matches_tensorflow_addons(lookahead: bool) -> None:
    with np.load(FIXTURES / "seed_optimizer_trajectory.npz") as d:
        t = {k: d[k] for k in d.files}
    epochs, warmup, peak = int(t["n_epochs"]), int(t["n_warmup_epochs"]), float(t["lr_max"])
    schedule = [learning_rate(e, epochs, peak, warmup) for e in range(epochs)]
    np.testing.assert_allclose(schedule, t["lr_per_epoch"], rtol=1e-12)
    kernel = torch.nn.Parameter(torch.from_numpy(t["initial_kernel"]).float())
    bias = torch.nn.Parameter(torch.from_numpy(t["initial_bias"]).float())
    inner = RAdam([kernel, bias], lr=peak, betas=(float(t["beta_1"]), float(t["beta_2"])),
                  eps=float(t["epsilon"]), threshold=float(t["sma_threshold"]))
    opt = Lookahead(inner, int(t["sync_period"]), float(t["slow_step_size"])) if lookahead else inner
    key = "" if lookahead else "radam_only_"
    steps_per_epoch = len(t["batch_index"]) // epochs
    for step, b in enumerate(t["batch_index"]):
        for group in opt.param_groups:
            group["lr"] = schedule[step // steps_per_epoch]
        x, y = torch.from_numpy(t["x_batches"][b]).float(), torch.from_numpy(t["y_batches"][b]).float()
        opt.zero_grad()
        ((x @ kernel + bias - y) ** 2).mean().backward()  # Keras 'mse'
        opt.step()
        np.testing.assert_allclose(kernel.detach().numpy(), t[f"{key}kernel_after_step"][step], atol=1e-6, rtol=0,
                                   err_msg=f"step {step + 1}")
        np.testing.assert_allclose(bias.detach().numpy(), t[f"{key}bias_after_step"][step], atol=1e-6, rtol=0,
                                   err_msg=f"step {step + 1}")
