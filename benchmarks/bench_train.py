"""Training throughput and peak memory of the video UNet: fused backends (``backend="auto"``) vs
``backend="torch"``, in one process, in the thesis' setting (ch. 4.3):

- SD1.4-size video UNet (860M spatial + 316M temporal) with random weights, spatial part frozen;
- batch 4 videos x 8 frames at 256 px, i.e. latents ``(32, 4, 32, 32)``; random text embeddings
  ``(B*F, 77, 768)`` (the VAE and text encoder are not timed: they are frozen and run once per batch);
- one training step = what the trainer runs (``tfaa.train.step.GradientStep``: the eq. 3.9 loss under
  bf16 autocast and its backward), then gradient clipping (1.0), AdamW on the temporal parameters.

Two step modes, each backend in each: "eager" (the trainer with ``train.cuda_graph: false``, and its
multi-process or gradient-checkpointing runs) and "graph" (the trainer's default on one CUDA process:
the forward and backward replayed from one CUDA graph; clipping and AdamW stay eager). Ratios compare
backends in the same mode. Each run: ``--warmup`` steps (Triton autotuning happens here), then
``--steps`` timed steps between CUDA syncs. Throughput = frames / s. Peak memory =
``torch.cuda.max_memory_allocated`` over the timed steps, and in graph mode also over the capture
(the replays' activations live in the graph's pool, which the allocator counts only while capturing):
total (weights + AdamW state + activations) and the part above what was allocated before (activations
and temporaries); also ``max_memory_reserved``.

    python benchmarks/bench_train.py --results benchmarks/RESULTS.md     # GPU, ~4 min on an H100
    python benchmarks/bench_train.py --tiny                              # CPU smoke run (tiny UNet)
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import torch

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from common import env_line, markdown_table, write_section  # noqa: E402


def build_model(tiny: bool, gradient_checkpointing: bool, device: torch.device):
    """The frozen-spatial video UNet (SD1.4 size, random weights; or the tiny test UNet)."""
    from tfaa.train import ModelConfig, build_video_unet

    cfg = ModelConfig(source="tiny" if tiny else "sd14-random", backend="torch")
    if tiny:
        from tfaa.testing import tiny_unet
        unet = build_video_unet(cfg, tiny_unet())
    else:
        with device:  # initialise the 1.2B parameters directly on the GPU
            unet = build_video_unet(cfg)
    unet.freeze_spatial().fuse_spatial_norm_act().to(device).train()  # as the trainer builds it
    if gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    return unet


def resolved_backends(device: torch.device) -> str:
    """What ``backend="auto"`` picks per op on ``device``."""
    from tfaa_kernels.backends import AUTO_PREFERENCE, resolve_backend

    return ", ".join(f"{op}={resolve_backend('auto', op, device)}" for op in AUTO_PREFERENCE)


def optimizer_step(grad_step, optimizer, params, latents, text) -> torch.Tensor:
    """One optimizer step as the trainer runs it: ``grad_step`` (eq. 3.9 loss and backward, eager or
    a CUDA-graph replay), gradient clipping at 1.0, ``optimizer.step()``, ``grad_step.zero_grad``.
    Returns the detached loss (no host sync)."""
    loss = grad_step(latents, text)
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    grad_step.zero_grad(optimizer)
    return loss


def init_optimizer_state(optimizer, params) -> None:
    """Create AdamW's moment buffers up front (one step on zero gradients), so every backend's
    measurement starts with the same memory allocated (weights + optimizer state)."""
    for q in params:
        q.grad = torch.zeros_like(q)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def run_backend(unet, optimizer, params, backend: str, mode: str, args, device, text_dim: int) -> dict:
    """Warm up and time ``args.steps`` training steps with ``backend`` in step ``mode`` ("eager" or
    "graph"); returns the measurements.

    Graph mode first runs ``args.warmup`` eager steps inside ``tk.auto_for_cuda_graphs()`` (Triton
    autotunes the kernels the capture will take), then the peak-memory window opens: the first
    timed-mode call's own warm-up calls and capture, and the replays."""
    import tfaa_kernels as tk
    from tfaa.train import sd_ddpm_scheduler
    from tfaa.train.step import GradientStep

    unet.set_backend(backend)
    sched = sd_ddpm_scheduler()
    b, f, s = args.batch_size, args.frames, args.latent_size
    gen = torch.Generator(device=device).manual_seed(0)
    latents = torch.randn(b, f, 4, s, s, device=device, generator=gen)
    text = torch.randn(b * f, 77, text_dim, device=device, generator=gen)
    cuda = device.type == "cuda"
    amp = torch.bfloat16 if cuda else None  # bf16 autocast on CUDA, fp32 on the CPU

    def steps(grad_step, n):
        return [optimizer_step(grad_step, optimizer, params, latents, text) for _ in range(n)]

    if mode == "graph":
        with tk.auto_for_cuda_graphs():
            steps(GradientStep(unet, sched, gen, params, autocast_dtype=amp), args.warmup)
        grad_step = GradientStep(unet, sched, gen, params, cuda_graph=True, autocast_dtype=amp)
    else:
        grad_step = GradientStep(unet, sched, gen, params, autocast_dtype=amp)
        steps(grad_step, args.warmup)
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.empty_cache()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    if mode == "graph":
        steps(grad_step, 1)  # warm-up calls and capture (inside), then one replay
    if cuda:
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    losses = steps(grad_step, args.steps)
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    loss_values = [float(x) for x in losses]
    if not all(map(lambda v: v == v and abs(v) != float("inf"), loss_values)):
        raise FloatingPointError(f"backend={backend} ({mode}): non-finite loss {loss_values}")
    out = {"backend": backend, "mode": mode, "step_ms": elapsed / args.steps * 1e3,
           "fps": b * f * args.steps / elapsed, "loss": sum(loss_values) / len(loss_values)}
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        out["peak_gib"] = peak / 2 ** 30
        out["act_gib"] = (peak - base) / 2 ** 30
        out["reserved_gib"] = torch.cuda.max_memory_reserved() / 2 ** 30
    del grad_step  # frees the graph and its memory pool
    optimizer.zero_grad(set_to_none=True)
    if cuda:
        torch.cuda.empty_cache()
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--tiny", action="store_true", help="CPU smoke mode: tiny UNet, B1 F2 4x4 latents, 2+2 steps")
    p.add_argument("--batch-size", type=int, default=4)
    p.add_argument("--frames", type=int, default=8)
    p.add_argument("--latent-size", type=int, default=32, help="latent side (pixels / 8); 32 = 256 px")
    p.add_argument("--warmup", type=int, default=3)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--backends", default="torch,auto", help="comma-separated, first is the baseline")
    p.add_argument("--modes", default=None,
                   help="comma-separated step modes, eager and/or graph (the trainer's train.cuda_graph); "
                        "default eager,graph on CUDA, eager on the CPU")
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--results", default=None, help="write the table into this RESULTS.md section bench_train")
    args = p.parse_args(argv)
    if args.tiny:
        args.batch_size, args.frames, args.latent_size, args.warmup, args.steps = 1, 2, 4, 1, 2
    for name in ("batch_size", "frames", "latent_size", "steps", "warmup"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if device.type == "cpu" and not args.tiny:
        p.error("the full benchmark needs a CUDA GPU; use --tiny for a CPU smoke run")
    modes = [m.strip() for m in (args.modes or ("eager,graph" if device.type == "cuda" else "eager")).split(",")
             if m.strip()]
    if not modes or any(m not in ("eager", "graph") for m in modes):
        p.error(f"--modes must list eager and/or graph, got {args.modes!r}")
    if "graph" in modes and device.type != "cuda":
        p.error("--modes graph needs a CUDA GPU")
    if "graph" in modes and args.gradient_checkpointing:
        p.error("--modes graph cannot be combined with --gradient-checkpointing (as train.cuda_graph)")
    torch.manual_seed(0)
    t_build = time.perf_counter()
    unet = build_model(args.tiny, args.gradient_checkpointing, device)
    params = [q for q in unet.temporal_parameters() if q.requires_grad]
    n_temporal = sum(q.numel() for q in params)
    n_total = sum(q.numel() for q in unet.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    init_optimizer_state(optimizer, params)
    text_dim = unet.unet.config.cross_attention_dim
    print(f"model: {n_total / 1e6:.1f}M parameters, {n_temporal / 1e6:.1f}M trainable (built in "
          f"{time.perf_counter() - t_build:.1f}s); auto -> {resolved_backends(device)}", flush=True)

    backends = [x.strip() for x in args.backends.split(",") if x.strip()]
    rows, results = [], {}
    for mode in modes:
        for backend in backends:
            t0 = time.perf_counter()
            try:
                r = run_backend(unet, optimizer, params, backend, mode, args, device, text_dim)
            except torch.cuda.OutOfMemoryError:
                optimizer.zero_grad(set_to_none=True)
                torch.cuda.empty_cache()
                print(f"{backend} ({mode}): out of GPU memory (try --gradient-checkpointing)", flush=True)
                r = {"backend": backend, "mode": mode, "oom": True}
            results[mode, backend] = r
            if not r.get("oom"):
                print(f"{backend} ({mode}): {r['fps']:.1f} frames/s, {r['step_ms']:.1f} ms/step"
                      + (f", peak {r['peak_gib']:.2f} GiB" if "peak_gib" in r else "")
                      + f" ({time.perf_counter() - t0:.1f}s incl. warm-up)", flush=True)
    for mode in modes:
        base = results[mode, backends[0]]
        for backend in backends:
            r = results[mode, backend]
            if r.get("oom"):
                rows.append([backend, mode] + ["OOM"] * 8)
                continue
            mem = [f"{r['peak_gib']:.2f}", f"{r['act_gib']:.2f}"] if "peak_gib" in r else ["—", "—"]
            if base.get("oom"):
                rows.append([backend, mode, f"{r['fps']:.1f}", f"{r['step_ms']:.1f}", "—"] + mem
                            + ["—", "—", f"{r.get('reserved_gib', 0):.2f}"])
                continue
            row = [backend, mode, f"{r['fps']:.1f}", f"{r['step_ms']:.1f}", f"{r['fps'] / base['fps']:.2f}x"] + mem
            if "peak_gib" in r:
                row += [f"{r['peak_gib'] / base['peak_gib']:.2f}x", f"{r['act_gib'] / base['act_gib']:.2f}x",
                        f"{r['reserved_gib']:.2f}"]
            else:
                row += ["—"] * 3
            rows.append(row)
    header = ["backend", "step", "frames/s", "ms/step", f"speed vs {backends[0]} (same step)", "peak GiB (total)",
              "peak GiB (above weights+optimizer)", "peak ratio (total)", "peak ratio (activations)",
              "peak reserved GiB"]
    setting = (f"Training step, {'tiny UNet (CPU smoke run)' if args.tiny else 'SD1.4-size video UNet, random weights'}: "
               f"{n_total / 1e6:.1f}M parameters, {n_temporal / 1e6:.1f}M trainable; batch {args.batch_size} x "
               f"{args.frames} frames, {args.latent_size}x{args.latent_size} latents "
               f"({args.latent_size * 8} px), {'bf16 autocast' if device.type == 'cuda' else 'fp32'}, "
               f"AdamW + grad clipping{', gradient checkpointing' if args.gradient_checkpointing else ''}; "
               f"{args.warmup} warm-up + {args.steps} timed steps. Step \"eager\": train.cuda_graph false "
               f"(and DDP / gradient checkpointing); \"graph\": the trainer's default on one CUDA process, the "
               f"forward and backward replayed from one CUDA graph (clipping and AdamW eager; the peak includes "
               f"the capture). auto -> {resolved_backends(device)}.")
    text = "\n".join(["### Training throughput (`benchmarks/bench_train.py`)", "", env_line(), "", setting, "",
                      markdown_table(header, rows)])
    print()
    print(text)
    if args.results:
        write_section(args.results, "bench_train", text)
        print(f"\nwrote section bench_train of {args.results}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
