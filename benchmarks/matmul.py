"""float32 matmul at the network's shapes: PyTorch's BLAS (MKL in the CPU build) against oneDNN.

    .venv/bin/python benchmarks/matmul.py [--batch 32] [--frames 380]

Times `F.linear` (what the model's Linear layers call: MKL's SGEMM in the CPU build) and oneDNN's
linear (`mkldnn_linear` on oneDNN tensors, and `_linear_pointwise` on plain ones) on the two
fully connected shapes of a seed-base conv block ([B x T, 384] -> 768 and back), alternating call by call,
medians of 15 after 2 rounds, with torch's current threads, and prints GFLOP/s beside the CPU's flags;
then the attention's q k^T (contraction 64) in three layouts and as oneDNN inner products per head.
"""

from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F

from machine import alternating

from aslfr.hardware import describe_cpu


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--frames", type=int, default=380)
    a = ap.parse_args()
    torch.manual_seed(0)
    rows = a.batch * a.frames
    print(f"CPU: {describe_cpu()}; {torch.get_num_threads()} threads; torch {torch.__version__}")
    for name, (k, n) in {"expand 384 -> 768": (384, 768), "project 768 -> 384": (768, 384)}.items():
        x, w, b = torch.randn(rows, k), torch.randn(n, k), torch.randn(n)
        xm, wm = x.to_mkldnn(), w.to_mkldnn()
        flops = 2 * rows * k * n
        r = alternating({"blas": lambda: F.linear(x, w, b),
                         "onednn": lambda: torch._C._nn.mkldnn_linear(xm, wm, None),
                         "pointwise": lambda: torch.ops.mkldnn._linear_pointwise(x, w, b, "none", [], "")})
        r = {k: flops / v / 1e9 for k, v in r.items()}
        blas, onednn, pointwise = r["blas"], r["onednn"], r["pointwise"]
        print(f"[{rows}, {k}] x [{k}, {n}] ({name}): F.linear (BLAS) {blas:.0f} GFLOP/s; oneDNN mkldnn_linear "
              f"{onednn:.0f}, _linear_pointwise {pointwise:.0f} ({max(onednn, pointwise) / blas:.2f}x BLAS)")
    # the attention's q k^T (contraction 64) in the layouts the model could hand it, and oneDNN per head
    heads, d = 6, 64
    q = torch.randn(a.batch, a.frames, heads, 3 * d).transpose(1, 2)[..., :d]
    k = torch.randn(a.batch, a.frames, heads, 3 * d).transpose(1, 2)[..., :d]
    qc, kc = q.contiguous(), k.contiguous()
    kt = kc.transpose(-1, -2).contiguous()
    flops = 2 * a.batch * heads * a.frames * a.frames * d
    per_head = [(qc[b, h], kc[b, h]) for b in range(a.batch) for h in range(heads)]
    r = alternating({"views": lambda: q @ k.transpose(-1, -2), "contiguous k": lambda: qc @ kc.transpose(-1, -2),
                     "contiguous k^T": lambda: qc @ kt,
                     "oneDNN per head": lambda: [torch.ops.mkldnn._linear_pointwise(x, y, None, "none", [], "")
                                                 for x, y in per_head]}, runs=7)
    print(f"attention q k^T [{a.batch * heads}, {a.frames}, {d}] x [{d}, {a.frames}]: "
          + ", ".join(f"{name} {flops / t / 1e9:.0f} GFLOP/s" for name, t in r.items()))


if __name__ == "__main__":
    main()
