"""Time every config of the spatial Triton kernels, with the head dim split into two power-of-two
chunks and padded to one block, at S1 (D=40) and 32x32 C640 (D=80), bf16. A tuning aid. (The
forward's descriptor configs run head dims <= 64 as one block either way: _FWD_ONE_CHUNK_UPTO.)

    python benchmarks/sweep_spatial.py
"""
import os
import sys

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import median_ms  # noqa: E402
from tfaa_kernels.triton import spatial_attention as sa  # noqa: E402

SHAPES = {"S1": (2, 16, 4096, 8, 40), "32x32 C640": (2, 16, 1024, 8, 80)}


def timed_configs(kernel, run):
    """Median of ``run`` with the autotuned ``kernel`` restricted to each of its configs."""
    all_configs = list(kernel.configs)
    out = []
    for cfg in all_configs:
        kernel.configs = [cfg]
        kernel.cache.clear()
        try:
            out.append((str(cfg), median_ms(run)))
        except Exception as e:  # out of resources etc.
            out.append((str(cfg), f"failed: {type(e).__name__}"))
    kernel.configs = all_configs
    kernel.cache.clear()
    return out


def main():
    for name, (b, f, l, h, d) in SHAPES.items():
        qkv = torch.randn(b * f, l, 3 * h * d, device="cuda", dtype=torch.bfloat16)
        q, k, v = qkv.unflatten(-1, (3, h, d)).unbind(2)
        dout = torch.randn(b * f, l, h, d, device="cuda", dtype=torch.bfloat16)
        for split in (True, False):
            sa._SPLIT_HEAD = split
            out, lse = sa.spatial_attention_fwd(q, k, v, f, d ** -0.5)
            for cfg, t in timed_configs(sa._spatial_fwd_kernel, lambda: sa.spatial_attention_fwd(q, k, v, f, d ** -0.5)):
                print(f"{name} split={split} fwd {cfg}: {t}", flush=True)
            for cfg, t in timed_configs(sa._spatial_bwd_kernel,
                                        lambda: sa.spatial_attention_bwd(dout, q, k, v, out, lse, f, d ** -0.5)):
                print(f"{name} split={split} bwd {cfg}: {t}", flush=True)
    sa._SPLIT_HEAD = True


if __name__ == "__main__":
    main()
