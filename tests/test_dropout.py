"""The one-pass CPU dropout (aslfr/dropout.py): torch.rand's keep rule and scale, draws that a
seed reproduces and threads do not change, a backward that recomputes the forward's mask, and
draws that look independent."""

import pytest
import torch

import aslfr.dropout as fused
from aslfr.model import dropout as model_dropout


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["float32", "bf16"])
def test_kept_elements_are_scaled_exactly_as_the_torch_path(dtype: torch.dtype) -> None:
    x = torch.randn(4, 3, 50, 50).to(dtype)
    torch.manual_seed(0)
    y = fused.dropout(x, 0.2)
    keep = y != 0
    # the torch path's bits: x * (mask * float32(1 / (1 - rate))), bf16 rounded to nearest even
    assert torch.equal(y, x * (keep.to(dtype) * (1.0 / (1.0 - 0.2))))
    assert y.dtype == dtype and y.shape == x.shape


def test_the_same_seed_gives_the_same_draws_on_any_number_of_threads(monkeypatch: pytest.MonkeyPatch) -> None:
    x = torch.randn(300_000)
    torch.manual_seed(3)
    a = fused.dropout(x, 0.3)
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        monkeypatch.setattr(fused, "_POOL", None)
        torch.manual_seed(3)
        b = fused.dropout(x, 0.3)
    finally:
        torch.set_num_threads(threads)
        fused._POOL = None
    assert torch.equal(a, b)
    assert not torch.equal(a, fused.dropout(x, 0.3))  # the next call draws anew


def test_backward_recomputes_the_forwards_mask() -> None:
    x = torch.randn(8, 1000, requires_grad=True)
    y = fused.dropout(x, 0.4)
    g = torch.randn_like(y)
    y.backward(g)
    keep = y != 0
    assert torch.equal(x.grad != 0, keep)
    assert torch.equal(x.grad, g * (keep.float() * (1.0 / (1.0 - 0.4))))


def test_the_draws_keep_the_rate_and_look_independent() -> None:
    torch.manual_seed(0)
    n, rate = 2_000_000, 0.2
    keep = (fused.dropout(torch.ones(n), rate) != 0).float()
    sd = (rate * (1 - rate) / n) ** 0.5
    assert abs(keep.mean().item() - (1 - rate)) < 5 * sd
    a, b = keep[:-1] - keep.mean(), keep[1:] - keep.mean()
    assert abs((a * b).mean().item() / keep.var().item()) < 5 / n ** 0.5  # neighbours uncorrelated
    other = (fused.dropout(torch.ones(n), rate) != 0).float()  # another call, other draws
    assert abs((keep * other).mean().item() - (1 - rate) ** 2) < 5 * sd


def test_the_network_takes_it_where_it_fits() -> None:
    assert fused.fits(torch.randn(3, 4)) and fused.fits(torch.randn(3, 4).bfloat16())
    assert not fused.fits(torch.randn(4, 3).t()) and not fused.fits(torch.randn(0, 4))
    assert not fused.fits(torch.randn(3, 4).double())
    x = torch.randn(64, 64)
    torch.manual_seed(1)
    ours = model_dropout(x, 0.5, training=True)
    torch.manual_seed(1)
    assert torch.equal(ours, fused.dropout(x, 0.5))
    assert model_dropout(x, 0.5, training=False) is x
    t = x.t()  # not contiguous: the torch path, same rule
    out = model_dropout(t, 0.5, training=True)
    assert torch.equal(out[out != 0], t[out != 0] * 2.0)
