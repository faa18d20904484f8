"""The matmul kernels the network's Linear layers run on a CPU (aslfr.kernels): each kernel
computes F.linear and its gradients in float32, the choice is measured once per machine and
kept, and everything that is not plain float32 eager CPU work goes to F.linear unchanged."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import aslfr.kernels as kernels
from aslfr.config import preset
from aslfr.kernels import Chooser, linear
from aslfr.model import FingerspellingModel

needs_onednn = pytest.mark.skipif(not kernels._ONEDNN_OK, reason="this torch build has no oneDNN")


def _grads(fn, x, w, b, g):  # noqa: ANN001, ANN202
    x, w = x.detach().requires_grad_(), w.detach().requires_grad_()
    b = b.detach().requires_grad_() if b is not None else None
    y = fn(x, w, b)
    y.backward(g)
    return y.detach(), x.grad, w.grad, b.grad if b is not None else None


@pytest.mark.parametrize("backend", ["blas", pytest.param("onednn", marks=needs_onednn)])
@pytest.mark.parametrize("bias", [True, False])
def test_each_kernel_computes_linear_and_its_gradients_in_float32(backend: str, bias: bool,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """float32: the same as F.linear up to the order of float32 sums (relative 1e-5)."""
    monkeypatch.setenv(kernels.ENV, backend)
    gen = torch.Generator().manual_seed(0)
    x, w = torch.randn(3, 50, 96, generator=gen), torch.randn(40, 96, generator=gen)
    b = torch.randn(40, generator=gen) if bias else None
    g = torch.randn(3, 50, 40, generator=gen)
    ours, ref = _grads(linear, x, w, b, g), _grads(F.linear, x, w, b, g)
    for a, r in zip(ours, ref):
        if r is not None:
            assert a.dtype == torch.float32 and a.shape == r.shape
            torch.testing.assert_close(a, r, rtol=1e-5, atol=1e-5 * float(r.abs().max()))


@needs_onednn
def test_the_choice_is_measured_once_per_machine_and_kept(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ASLFR_CACHE_DIR", str(tmp_path))
    monkeypatch.setenv(kernels.ENV, "auto")
    first = Chooser()
    x, w = torch.randn(300, 64), torch.randn(32, 64)
    chosen = first.choose("forward", 300, 64, 32, (x, w, None))
    assert chosen in ("blas", "onednn")
    assert set(first.measured["forward:512x64x32"]) == {"blas", "onednn"}  # both timed, M rounded up
    saved = json.loads((tmp_path / "matmul-kernels.json").read_text())
    assert saved == {kernels.machine_signature(): {"forward:512x64x32": chosen}}
    again = Chooser()  # another process on the same machine: read, not measured
    assert again.choose("forward", 400, 64, 32, (x, w, None)) == chosen and not again.measured
    assert "forward oneDNN" in again.summary()
    (tmp_path / "matmul-kernels.json").write_text("{not json")  # a damaged cache costs a measurement
    assert Chooser().choose("forward", 300, 64, 32, (x, w, None)) in ("blas", "onednn")


def test_a_forced_kernel_is_used_without_measuring(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kernels.ENV, "blas")
    chooser = Chooser()
    assert chooser.choose("grad_weight", 10, 4, 3, ()) == "blas" and not chooser.measured
    assert chooser.summary() == f"blas for every product ({kernels.ENV})"


def test_what_is_not_plain_float32_cpu_work_goes_to_f_linear(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(kernels.ENV, "onednn" if kernels._ONEDNN_OK else "blas")
    calls = []
    monkeypatch.setattr(kernels._LinearFunction, "apply", lambda *a: calls.append(a) or F.linear(*a))
    x, w = torch.randn(2, 5, 8), torch.randn(4, 8)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert linear(x, w).dtype == torch.bfloat16  # autocast's own bf16 path
    assert linear(x.double(), w.double()).dtype == torch.float64
    assert linear(torch.randn(0, 5, 8), w).shape == (0, 5, 4)
    assert not calls
    linear(x, w)
    assert len(calls) == 1


def test_the_network_learns_the_same_on_either_kernel(monkeypatch: pytest.MonkeyPatch) -> None:
    """float32: a few optimiser steps of a small network on BLAS alone and on oneDNN agree to the
    order of float32 sums."""
    cfg = preset("demo").override(["dim=32", "heads=2", "stages=1", "kernel_sizes=5,3", "bn_group=0"])
    x = torch.randn(4, 24, 600, generator=torch.Generator().manual_seed(1))
    results = {}
    for backend in ["blas"] + (["onednn"] if kernels._ONEDNN_OK else []):
        monkeypatch.setenv(kernels.ENV, backend)
        torch.manual_seed(0)
        model = FingerspellingModel(cfg)
        model.eval()  # no dropout: the same function both times
        opt = torch.optim.SGD(model.parameters(), lr=0.1)
        for _ in range(3):
            opt.zero_grad()
            model(x).square().mean().backward()
            opt.step()
        results[backend] = [p.detach().clone() for p in model.parameters()]
    for a, b in zip(*results.values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


def test_a_bad_setting_is_one_line_before_anything_is_written(prepared_dir: Path, tmp_path: Path) -> None:
    run = subprocess.run([sys.executable, "-m", "aslfr", "train", "--preset", "demo", "--data", str(prepared_dir),
                          "--out", str(tmp_path / "r")], capture_output=True, text=True,
                         env={**os.environ, kernels.ENV: "fastest"})
    assert run.returncode == 2 and run.stderr.strip().splitlines() == [
        f"aslfr train: error: {kernels.ENV}=fastest: expected auto, blas or onednn"]
    assert not (tmp_path / "r").exists()
