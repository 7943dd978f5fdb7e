"""Probe (issue 7): one training step of bench_train's setting, eager vs replayed as one CUDA graph.

The whole step (eq. 3.9 loss under bf16 autocast with its cache off, backward, gradient clipping,
``AdamW(capturable=True)``) is captured once with ``torch.cuda.graph`` after 3 warm-up steps on a side
stream, then replayed. One variant per process (GPU only):

    python benchmarks/probe_train_graph.py BACKEND:FROZEN_DTYPE:LAYOUT
    # BACKEND torch|auto|triton|cuda, FROZEN_DTYPE fp32|bf16 (the frozen spatial weights), LAYOUT nchw|cl

Prints one line ``RESULT {json}``: eager ms/step (mean of 8 after 3 warm-ups) and peak GiB, graph
ms/step (mean of 10 replays), or ``graph_error`` if the step cannot be captured. Not a trainer
feature: the trainer runs eager steps.
"""
import json
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import torch
import bench_train as bt
from tfaa.train import sd_ddpm_scheduler
from tfaa.train.loss import diffusion_loss

if not torch.cuda.is_available():
    sys.exit("probe_train_graph.py needs a CUDA GPU")
dev = torch.device("cuda")
if len(sys.argv) != 2 or len(sys.argv[1].split(":")) != 3:
    sys.exit("usage: probe_train_graph.py BACKEND:FROZEN_DTYPE:LAYOUT, e.g. auto:bf16:nchw")
variant = sys.argv[1]
backend, wdt, fmt = variant.split(":")
if wdt not in ("fp32", "bf16") or fmt not in ("nchw", "cl"):
    sys.exit(f"FROZEN_DTYPE must be fp32 or bf16 and LAYOUT nchw or cl, got {wdt!r}, {fmt!r}")
torch.manual_seed(0)
unet = bt.build_model(False, False, dev)
if wdt == "bf16":
    for p in unet.parameters():
        if not p.requires_grad:
            p.data = p.data.to(torch.bfloat16)
if fmt == "cl":
    unet.to(memory_format=torch.channels_last)
unet.set_backend(backend)
params = [q for q in unet.temporal_parameters() if q.requires_grad]
sched = sd_ddpm_scheduler()
lat = torch.randn(4, 8, 4, 32, 32, device=dev)
text = torch.randn(32, 77, 768, device=dev)
res = dict(variant=variant)

def body(opt, cache):
    with torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=cache):
        loss = diffusion_loss(unet, lat, text, sched, None)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    return loss

def wall(fn, n):
    torch.cuda.synchronize(); t = time.perf_counter()
    for _ in range(n): fn()
    torch.cuda.synchronize(); return (time.perf_counter() - t) / n * 1e3

opt = torch.optim.AdamW(params, lr=1e-5, capturable=True)
def eager():
    opt.zero_grad(set_to_none=True); return body(opt, True)
for _ in range(3): eager()
torch.cuda.reset_peak_memory_stats()
res["eager_ms"] = round(wall(eager, 8), 1)
res["eager_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
try:
    s = torch.cuda.Stream(); s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            opt.zero_grad(set_to_none=True); body(opt, False)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    opt.zero_grad(set_to_none=True)
    with torch.cuda.graph(g):
        static_loss = body(opt, False)
    g.replay(); torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    res["graph_ms"] = round(wall(g.replay, 10), 1)
    res["graph_peak_gib"] = round(torch.cuda.max_memory_allocated() / 2**30, 2)
    res["graph_loss_finite"] = bool(torch.isfinite(static_loss).item())
except Exception as e:
    res["graph_error"] = f"{type(e).__name__}: {str(e)[:300]}"
print("RESULT " + json.dumps(res), flush=True)
