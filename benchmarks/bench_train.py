"""Training throughput and peak memory of the video UNet: fused backends (``backend="auto"``) vs
``backend="torch"``, in one process, in the thesis' setting (ch. 4.3):

- SD1.4-size video UNet (860M spatial + 316M temporal) with random weights, spatial part frozen;
- batch 4 videos x 8 frames at 256 px, i.e. latents ``(32, 4, 32, 32)``; random text embeddings
  ``(B*F, 77, 768)`` (the VAE and text encoder are not timed: they are frozen and run once per batch);
- one training step = the trainer's eq. 3.9 loss (``tfaa.train.loss.diffusion_loss``) under bf16
  autocast, backward, gradient clipping (1.0), AdamW on the temporal parameters.

Each backend: ``--warmup`` steps (Triton autotuning happens here), then ``--steps`` timed steps between
CUDA syncs. Throughput = frames / s. Peak memory = ``torch.cuda.max_memory_allocated`` during the
timed steps (total: weights + AdamW state + activations) and the part above what was allocated
before the step (activations and temporaries).

    python benchmarks/bench_train.py --results benchmarks/RESULTS.md     # GPU, < 3 min on an H100
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


def train_step(unet, optimizer, params, latents, text, sched, generator, autocast_cache: bool = True):
    """One optimizer step of the benchmark: eq. 3.9 loss (bf16 autocast on CUDA, fp32 on CPU),
    backward, gradient clipping at 1.0, ``optimizer.step()``; the caller zeroes the gradients.
    ``autocast_cache=False`` for CUDA-graph capture (benchmarks/probe_train_graph.py). Returns the
    detached loss (no host sync)."""
    from tfaa.train.loss import diffusion_loss

    if latents.device.type == "cuda":
        amp = torch.autocast("cuda", dtype=torch.bfloat16, cache_enabled=autocast_cache)
    else:
        amp = torch.autocast("cpu", enabled=False)
    with amp:
        loss = diffusion_loss(unet, latents, text, sched, generator)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    optimizer.step()
    return loss.detach()


def run_backend(unet, optimizer, params, backend: str, args, device, text_dim: int) -> dict:
    """Warm up and time ``args.steps`` training steps with ``backend``; returns the measurements."""
    from tfaa.train import sd_ddpm_scheduler

    unet.set_backend(backend)
    sched = sd_ddpm_scheduler()
    b, f, s = args.batch_size, args.frames, args.latent_size
    gen = torch.Generator(device=device).manual_seed(0)
    latents = torch.randn(b, f, 4, s, s, device=device, generator=gen)
    text = torch.randn(b * f, 77, text_dim, device=device, generator=gen)
    cuda = device.type == "cuda"

    def step() -> torch.Tensor:
        loss = train_step(unet, optimizer, params, latents, text, sched, gen)
        optimizer.zero_grad(set_to_none=True)
        return loss

    for _ in range(args.warmup):
        step()
    if cuda:
        torch.cuda.synchronize()
        base = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    losses = []
    t0 = time.perf_counter()
    for _ in range(args.steps):
        losses.append(step())
    if cuda:
        torch.cuda.synchronize()
    elapsed = time.perf_counter() - t0
    loss_values = [float(x) for x in losses]
    if not all(map(lambda v: v == v and abs(v) != float("inf"), loss_values)):
        raise FloatingPointError(f"backend={backend}: non-finite loss {loss_values}")
    out = {"backend": backend, "step_ms": elapsed / args.steps * 1e3, "fps": b * f * args.steps / elapsed,
           "loss": sum(loss_values) / len(loss_values)}
    if cuda:
        peak = torch.cuda.max_memory_allocated()
        out["peak_gib"] = peak / 2 ** 30
        out["act_gib"] = (peak - base) / 2 ** 30
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
    p.add_argument("--gradient-checkpointing", action="store_true")
    p.add_argument("--results", default=None, help="write the table into this RESULTS.md section bench_train")
    args = p.parse_args(argv)
    if args.tiny:
        args.batch_size, args.frames, args.latent_size, args.warmup, args.steps = 1, 2, 4, 1, 2
    for name in ("batch_size", "frames", "latent_size", "steps"):
        if getattr(args, name) < 1:
            p.error(f"--{name.replace('_', '-')} must be >= 1")

    device = torch.device("cuda" if torch.cuda.is_available() and not args.tiny else "cpu")
    if device.type == "cpu" and not args.tiny:
        p.error("the full benchmark needs a CUDA GPU; use --tiny for a CPU smoke run")
    torch.manual_seed(0)
    t_build = time.perf_counter()
    unet = build_model(args.tiny, args.gradient_checkpointing, device)
    params = [q for q in unet.temporal_parameters() if q.requires_grad]
    n_temporal = sum(q.numel() for q in params)
    n_total = sum(q.numel() for q in unet.parameters())
    optimizer = torch.optim.AdamW(params, lr=1e-5)
    text_dim = unet.unet.config.cross_attention_dim
    print(f"model: {n_total / 1e6:.1f}M parameters, {n_temporal / 1e6:.1f}M trainable (built in "
          f"{time.perf_counter() - t_build:.1f}s); auto -> {resolved_backends(device)}", flush=True)

    rows, results = [], []
    for backend in [x.strip() for x in args.backends.split(",") if x.strip()]:
        t0 = time.perf_counter()
        try:
            r = run_backend(unet, optimizer, params, backend, args, device, text_dim)
        except torch.cuda.OutOfMemoryError:
            optimizer.zero_grad(set_to_none=True)
            torch.cuda.empty_cache()
            print(f"{backend}: out of GPU memory (try --gradient-checkpointing)", flush=True)
            results.append({"backend": backend, "oom": True})
            continue
        results.append(r)
        print(f"{backend}: {r['fps']:.1f} frames/s, {r['step_ms']:.1f} ms/step"
              + (f", peak {r['peak_gib']:.2f} GiB" if "peak_gib" in r else "")
              + f" ({time.perf_counter() - t0:.1f}s incl. warm-up)", flush=True)
    base = results[0]
    for r in results:
        if r.get("oom") or base.get("oom"):
            rows.append([r["backend"]] + (["OOM"] * 7 if r.get("oom") else
                                          [f"{r['fps']:.1f}", f"{r['step_ms']:.1f}", "—",
                                           f"{r.get('peak_gib', 0):.2f}", f"{r.get('act_gib', 0):.2f}", "—", "—"]))
            continue
        row = [r["backend"], f"{r['fps']:.1f}", f"{r['step_ms']:.1f}", f"{r['fps'] / base['fps']:.2f}x"]
        if "peak_gib" in r:
            row += [f"{r['peak_gib']:.2f}", f"{r['act_gib']:.2f}", f"{r['peak_gib'] / base['peak_gib']:.2f}x",
                    f"{r['act_gib'] / base['act_gib']:.2f}x"]
        else:
            row += ["—"] * 4
        rows.append(row)
    header = ["backend", "frames/s", "ms/step", f"speed vs {base['backend']}", "peak GiB (total)",
              "peak GiB (above weights+optimizer)", "peak ratio (total)", "peak ratio (activations)"]
    setting = (f"Training step, {'tiny UNet (CPU smoke run)' if args.tiny else 'SD1.4-size video UNet, random weights'}: "
               f"{n_total / 1e6:.1f}M parameters, {n_temporal / 1e6:.1f}M trainable; batch {args.batch_size} x "
               f"{args.frames} frames, {args.latent_size}x{args.latent_size} latents "
               f"({args.latent_size * 8} px), {'bf16 autocast' if device.type == 'cuda' else 'fp32'}, "
               f"AdamW + grad clipping{', gradient checkpointing' if args.gradient_checkpointing else ''}; "
               f"{args.warmup} warm-up + {args.steps} timed steps. auto -> {resolved_backends(device)}.")
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
