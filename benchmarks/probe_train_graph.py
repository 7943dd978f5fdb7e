"""Probe (issue 7): one training step of bench_train's setting, eager vs replayed as one CUDA graph.

The step is ``bench_train.train_step`` (eq. 3.9 loss under bf16 autocast, backward, gradient
clipping, ``AdamW(capturable=True)``), preceded by zeroing the gradients; the graph variant
captures it once (``common.graph_ms``: 3 warm-up calls on a side stream, then ``torch.cuda.graph``;
autocast cache off, the noise and timesteps from the default CUDA generator, which the graph
advances on every replay). One variant per process (GPU only):

    python benchmarks/probe_train_graph.py BACKEND:FROZEN_DTYPE:LAYOUT
    # BACKEND torch|auto|triton|cuda, FROZEN_DTYPE fp32|bf16 (the frozen spatial weights), LAYOUT nchw|cl

Prints one line ``RESULT {json}``: eager and graph ms/step (medians of triton.testing.do_bench over
~2 s each), the eager peak GiB (``torch.cuda.max_memory_allocated``) and the peak over the graph's
warm-up, capture and replays; ``graph_ms`` is null when the step cannot be captured (the reason is
printed). The graph's warm-up and capture run inside ``tfaa_kernels.auto_for_cuda_graphs()`` ("auto"
chooses by GPU time). Not a trainer feature: the trainer runs eager steps.
"""
import json
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch  # noqa: E402

import bench_train  # noqa: E402
import tfaa_kernels as tk  # noqa: E402
from common import graph_ms, median_ms  # noqa: E402


def main(argv) -> int:
    if len(argv) != 1 or len(argv[0].split(":")) != 3:
        sys.exit("usage: probe_train_graph.py BACKEND:FROZEN_DTYPE:LAYOUT, e.g. auto:bf16:nchw")
    backend, frozen_dtype, layout = argv[0].split(":")
    if frozen_dtype not in ("fp32", "bf16") or layout not in ("nchw", "cl"):
        sys.exit(f"FROZEN_DTYPE must be fp32 or bf16 and LAYOUT nchw or cl, got {frozen_dtype!r}, {layout!r}")
    if not torch.cuda.is_available():
        sys.exit("probe_train_graph.py needs a CUDA GPU")
    from tfaa.train import sd_ddpm_scheduler

    dev = torch.device("cuda")
    torch.manual_seed(0)
    unet = bench_train.build_model(False, False, dev)
    if frozen_dtype == "bf16":
        for p in unet.parameters():
            if not p.requires_grad:
                p.data = p.data.to(torch.bfloat16)
    if layout == "cl":
        unet.to(memory_format=torch.channels_last)
    unet.set_backend(backend)
    params = [q for q in unet.temporal_parameters() if q.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=1e-5, capturable=True)
    sched = sd_ddpm_scheduler()
    latents = torch.randn(4, 8, 4, 32, 32, device=dev)
    text = torch.randn(32, 77, unet.unet.config.cross_attention_dim, device=dev)

    def step(cache: bool):
        optimizer.zero_grad(set_to_none=True)
        return bench_train.train_step(unet, optimizer, params, latents, text, sched, None, autocast_cache=cache)

    res = {"variant": argv[0]}
    for _ in range(3):
        step(True)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    res["eager_ms"] = round(median_ms(lambda: step(True), rep_ms=2000), 1)
    res["eager_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    # the graph's warm-up and capture under auto_for_cuda_graphs: "auto" chooses by GPU time there
    # (the fused GroupNorm+SiLU+conv layer; warm-up calls autotune it before the capture)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    with tk.auto_for_cuda_graphs():
        g = graph_ms(lambda: step(False), rep_ms=2000)
    res["graph_ms"] = None if g is None else round(g, 1)
    res["graph_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
    print("RESULT " + json.dumps(res), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
