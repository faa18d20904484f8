"""The seed's optimiser: RAdam (TensorFlow Addons semantics, rectification threshold 4) inside
Lookahead, and its per-epoch learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch.optim import Optimizer


class RAdam(Optimizer):
    """Rectified Adam. Rectifies when the SMA length exceeds `threshold` (TFA's sma_threshold;
    torch.optim.RAdam hard-codes 5), else takes an un-adapted momentum step. No weight decay."""

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-7,
                 threshold: float = 4.0) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, threshold=threshold))

    @torch.no_grad()
    def step(self, closure=None):  # noqa: ANN001
        loss = closure() if closure is not None else None
        for group in self.param_groups:
            b1, b2 = group["betas"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["step"] = 0
                    state["m"] = torch.zeros_like(p)
                    state["v"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                m, v = state["m"], state["v"]
                m.lerp_(p.grad, 1 - b1)
                v.mul_(b2).addcmul_(p.grad, p.grad, value=1 - b2)
                m_hat = m / (1 - b1 ** t)
                sma_inf = 2 / (1 - b2) - 1
                sma_t = sma_inf - 2 * t * b2 ** t / (1 - b2 ** t)
                if sma_t >= group["threshold"]:
                    r = math.sqrt((sma_t - 4) * (sma_t - 2) * sma_inf / ((sma_inf - 4) * (sma_inf - 2) * sma_t))
                    v_hat = (v / (1 - b2 ** t)).sqrt_().add_(group["eps"])
                    p.addcdiv_(m_hat, v_hat, value=-group["lr"] * r)
                else:
                    p.add_(m_hat, alpha=-group["lr"])
        return loss


class Lookahead:
    """Every k inner steps, slow weights move alpha of the way to the fast ones, and the fast
    weights restart from there."""

    def __init__(self, inner: Optimizer, k: int = 5, alpha: float = 0.5) -> None:
        self.inner, self.k, self.alpha = inner, k, alpha
        self.steps = 0
        self.slow = [p.detach().clone() for g in inner.param_groups for p in g["params"]]

    @property
    def param_groups(self) -> list[dict]:
        # the inner optimiser's list is replaced when it loads a state: always look it up
        return self.inner.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.inner.zero_grad(set_to_none=set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        self.inner.step()
        self.steps += 1
        if self.steps % self.k == 0:
            fast = [p for g in self.inner.param_groups for p in g["params"]]
            for s, p in zip(self.slow, fast):
                s.lerp_(p, self.alpha)
                p.copy_(s)

    def state_dict(self) -> dict:
        return {"inner": self.inner.state_dict(), "steps": self.steps, "slow": self.slow}

    def load_state_dict(self, state: dict) -> None:
        self.inner.load_state_dict(state["inner"])
        self.steps = state["steps"]
        for s, saved in zip(self.slow, state["slow"]):
            s.copy_(saved)


def learning_rate(epoch: int, epochs: int, peak: float, warmup: int) -> float:
    """Warm-up peak * 2^-(warmup - e) for the first epochs, then cosine from peak to 0."""
    if epoch < warmup:
        return peak * 2.0 ** -(warmup - epoch)
    span = max(1, epochs - warmup)
    return peak * 0.5 * (1 + math.cos(math.pi * (epoch - warmup) / span))
