"""pytest-benchmark timing of first-adjacent attention forwards at DESIGN.md S1 (B2 F16 64x64 C320,
8 heads, bf16), temporal and spatial mode, every kernel backend available on the GPU:

    pytest benchmarks/test_bench_attention.py --benchmark-only

Shapes, inputs and backend discovery come from bench_attention.py (the full comparison table with
the baselines, backward passes and floors)."""
import os
import sys

import pytest
import torch

pytest.importorskip("pytest_benchmark")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_attention import SHAPES, kernel_backends, packed_inputs  # noqa: E402

S1 = SHAPES["S1"]


def _backends(mode):
    """Backends to parametrize over (resolved lazily: importing tfaa_kernels needs no GPU)."""
    return kernel_backends(mode) if torch.cuda.is_available() else []


@pytest.mark.parametrize("mode,backend", [(m, b) for m in ("temporal", "spatial") for b in _backends(m)])
def test_bench_attention_fwd_s1(benchmark, mode, backend):
    import tfaa_kernels as tk
    from tfaa_kernels import reference

    b, f, h, w, c, heads = S1
    _, q, k, v = packed_inputs(*S1, torch.bfloat16, "cuda")
    q, k, v = (t.detach() for t in (q, k, v))

    def run():
        with torch.no_grad():
            out = tk.first_adjacent_attention(q, k, v, f, mode, backend=backend)
        torch.cuda.synchronize()
        return out

    run()  # compile + autotune outside the timed rounds
    out = benchmark.pedantic(run, rounds=50, iterations=5, warmup_rounds=5)
    assert out.shape == (b * f, h * w, heads, c // heads)
    ref = reference.first_adjacent_attention(q.float(), k.float(), v.float(), f, mode)
    err = ((out.float() - ref).norm() / ref.norm()).item()
    assert err < 2e-2, f"{mode}/{backend}: relative error {err:.2e} against the fp32 reference"
