import math

import pytest
import torch

from aslfr.optim import Lookahead, RAdam, learning_rate


def _fit(opt_factory, steps: int = 30) -> torch.Tensor:
    torch.manual_seed(0)
    w = torch.nn.Parameter(torch.randn(5))
    target = torch.arange(5.0)
    opt = opt_factory([w])
    for _ in range(steps):
        opt.zero_grad()
        ((w - target) ** 2).sum().backward()
        opt.step()
    return w.detach()


def test_radam_with_threshold_5_is_torchs_radam() -> None:
    ours = _fit(lambda p: RAdam(p, lr=0.05, eps=1e-8, threshold=5.0))
    ref = _fit(lambda p: torch.optim.RAdam(p, lr=0.05, eps=1e-8))
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-6)


def test_threshold_4_rectifies_one_step_earlier() -> None:
    # SMA length is 4.0 at step 6 (for beta2 0.999), so threshold 4 rectifies from step 6, 5 from step 7.
    assert not torch.allclose(_fit(lambda p: RAdam(p, lr=0.05, threshold=4.0), 6),
                              _fit(lambda p: RAdam(p, lr=0.05, threshold=5.0), 6))


def test_lookahead_pulls_fast_weights_back_every_k_steps() -> None:
    w = torch.nn.Parameter(torch.zeros(1))
    opt = Lookahead(torch.optim.SGD([w], lr=1.0), k=5, alpha=0.5)
    for step in range(1, 11):
        opt.zero_grad()
        (-w).sum().backward()  # gradient -1: SGD adds 1 per step
        opt.step()
        if step == 4:
            assert w.item() == pytest.approx(4.0)
        if step == 5:
            assert w.item() == pytest.approx(2.5)  # slow 0 -> 0 + 0.5 * (5 - 0)
    assert w.item() == pytest.approx(2.5 + 0.5 * 5)
    state = opt.state_dict()
    again = Lookahead(torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0))
    again.load_state_dict(state)
    assert again.steps == 10 and again.slow[0].item() == pytest.approx(5.0)
    again.param_groups[0]["lr"] = 0.25  # a schedule set after loading reaches the inner optimiser
    assert again.inner.param_groups[0]["lr"] == 0.25


def test_schedule_warms_up_by_halves_then_cosine_to_zero() -> None:
    lrs = [learning_rate(e, 300, 1e-3, 5) for e in range(300)]
    assert lrs[:6] == pytest.approx([1e-3 / 32, 1e-3 / 16, 1e-3 / 8, 1e-3 / 4, 1e-3 / 2, 1e-3])
    assert lrs[5 + 295 // 2] == pytest.approx(1e-3 * 0.5 * (1 + math.cos(math.pi * 147 / 295)))
    assert lrs[-1] < 1e-6 and all(a >= b for a, b in zip(lrs[5:], lrs[6:]))
