"""pytest-benchmark timing of the Triton temporal_conv1d forward at DESIGN.md S1 (B2 F16 64x64
C320, bf16, K=3), NCHW and channels_last:

    pytest benchmarks/test_bench_conv.py --benchmark-only

The full comparison table (baselines, backward, the fused GroupNorm+SiLU layer) is bench_conv.py."""
import pytest
import torch

pytest.importorskip("pytest_benchmark")
pytestmark = [pytest.mark.gpu,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]

B, F, H, W, C, K = 2, 16, 64, 64, 320, 3


@pytest.mark.parametrize("layout", ["nchw", "channels_last"])
def test_bench_conv_fwd_s1(benchmark, layout):
    import tfaa_kernels as tk
    x = torch.randn(B * F, C, H, W, device="cuda", dtype=torch.bfloat16)
    if layout == "channels_last":
        x = x.contiguous(memory_format=torch.channels_last)
    w = torch.randn(C, C, K, device="cuda", dtype=torch.bfloat16) / (C * K) ** 0.5
    b = torch.randn(C, device="cuda", dtype=torch.bfloat16)

    def run():
        y = tk.temporal_conv1d(x, w, b, F, backend="triton")
        torch.cuda.synchronize()
        return y

    run()  # compile + autotune outside the timed rounds
    y = benchmark.pedantic(run, rounds=50, iterations=5, warmup_rounds=5)
    assert y.shape == (B * F, C, H, W) and torch.isfinite(y).all()
