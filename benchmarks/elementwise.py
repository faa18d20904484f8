"""The step's largest non-matmul pieces at seed-base's shapes, the project's way against the
plain torch ops it replaced, alternating call by call (medians of 9 after 2 rounds).

    .venv/bin/python benchmarks/elementwise.py [--batch 32] [--frames 380]

- attention dropout on [B, 6, T, T], forward and backward, float32 and bf16: `aslfr.dropout`
  (one pass each way, no mask kept) against `x * (rand_like(x) >= rate) * scale`;
- BatchNorm on [B, T, 768] in groups of 16, forward and backward: the unmasked path (PyTorch's own
  batch norm per group) against the same statistics written as tensor ops (the masked path's code
  with every frame counting); and on bf16 activations, taken as they are against float32 copies.
"""

from __future__ import annotations

import argparse

import torch

from machine import alternating

from aslfr import dropout as fused
from aslfr.hardware import describe_cpu
from aslfr.model import BatchNorm


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=380)
    a = ap.parse_args()
    print(f"CPU: {describe_cpu()}; {torch.get_num_threads()} threads; torch {torch.__version__}")
    for dtype in (torch.float32, torch.bfloat16):
        x = torch.rand(a.batch, 6, a.frames, a.frames).to(dtype).requires_grad_()
        g = torch.randn(x.shape).to(dtype)

        def ours() -> None:
            fused.dropout(x, 0.2).backward(g)

        def torch_ops() -> None:
            (x * (torch.rand_like(x) >= 0.2).to(dtype) * (1.0 / 0.8)).backward(g)

        r = alternating({"ours": ours, "torch": torch_ops}, runs=9)
        print(f"attention dropout {list(x.shape)} {str(dtype).replace('torch.', '')}, forward + backward: "
              f"aslfr {r['ours'] * 1000:.1f} ms, torch ops {r['torch'] * 1000:.1f} ms ({r['torch'] / r['ours']:.2f}x)")
    bn = BatchNorm(768, group=16).train()
    h = torch.randn(a.batch, a.frames, 768, requires_grad=True)
    gh = torch.randn(h.shape)
    every = torch.ones(a.batch, a.frames, dtype=torch.bool)  # the masked path, every frame counting

    r = alternating({"ours": lambda: bn(h).backward(gh), "ops": lambda: bn(h, every).backward(gh)}, runs=9)
    print(f"BatchNorm {list(h.shape)} in groups of 16, forward + backward: aslfr {r['ours'] * 1000:.1f} ms, "
          f"as tensor ops {r['ops'] * 1000:.1f} ms ({r['ops'] / r['ours']:.2f}x)")
    # bf16 activations (autocast): taken as they are, against float32 copies in and out
    hb, gb = h.detach().reshape(-1, 768).bfloat16().requires_grad_(), gh.reshape(-1, 768).bfloat16()
    w, b = bn.weight, bn.bias

    def direct() -> None:
        torch.native_batch_norm(hb, w, b, None, None, True, 0.0, 1e-3)[0].backward(gb)

    def copies() -> None:
        torch.native_batch_norm(hb.float(), w, b, None, None, True, 0.0, 1e-3)[0].bfloat16().backward(gb)

    r = alternating({"direct": direct, "copies": copies}, runs=9)
    print(f"BatchNorm of bf16 {list(h.shape)}, forward + backward: bf16 in and out {r['direct'] * 1000:.1f} ms, "
          f"through float32 copies {r['copies'] * 1000:.1f} ms ({r['copies'] / r['direct']:.2f}x)")


if __name__ == "__main__":
    main()
