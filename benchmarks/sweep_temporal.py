"""Sweep the temporal Triton kernel's launch heuristics (tile size, warps, backward chunking) at
DESIGN.md S1/S2, bf16, and print fwd / bwd medians per setting. A tuning aid, not a result table.

    python benchmarks/sweep_temporal.py
"""
import itertools
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_ms  # noqa: E402
from tfaa_kernels.triton import temporal_attention as ta  # noqa: E402

SHAPES = {"S1": (2, 16, 4096, 8, 40), "S2": (2, 16, 256, 8, 160)}


def main():
    for name, (b, f, l, h, d) in SHAPES.items():
        qkv = torch.randn(b * f, l, 3 * h * d, device="cuda", dtype=torch.bfloat16)
        q, k, v = qkv.unflatten(-1, (3, h, d)).unbind(2)
        dout = torch.randn(b * f, l, h, d, device="cuda", dtype=torch.bfloat16)
        for tile, fw, bw, tp in itertools.product((1024, 2048, 4096), (2, 4, 8), (4, 8), (1024, 4096)):
            if fw == 2 and tile == 4096:
                continue
            ta._TILE, ta._FWD_WARPS, ta._BWD_WARPS, ta._TARGET_PROGRAMS = tile, fw, bw, tp
            t_f = median_ms(lambda: ta.temporal_attention_fwd(q, k, v, f, d ** -0.5))
            t_b = median_ms(lambda: ta.temporal_attention_bwd(dout, q, k, v, f, d ** -0.5))
            print(f"{name} tile={tile:5d} fwd_warps={fw} bwd_warps={bw} target={tp:5d}  "
                  f"fwd {t_f:.4f} ms  bwd {t_b:.4f} ms", flush=True)


if __name__ == "__main__":
    main()
