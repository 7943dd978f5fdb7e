"""``tfaa sample``: text-to-video sampling from a local model directory.

One prompt (``--prompt``, written to ``--out``) or a prompts file (``--prompts-file``, one video
per non-empty line, written to ``--out`` as a directory: ``{index:05d}_{slug}.{gif|mp4}``).
Under ``accelerate launch`` the prompts are split across processes with accelerate's
``PartialState.split_between_processes``: every prompt is sampled exactly once. Video ``i`` uses
seed ``--seed + i``, so the outputs do not depend on the number of processes.
"""
from __future__ import annotations

import argparse
import os
import re
from typing import List, Tuple

DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("sample", help="generate videos from text prompts",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True,
                   help="diffusers directory: an SD 1.x pipeline (UNet inflated) or a saved TFAAPipeline")
    p.add_argument("--temporal-weights", default=None,
                   help="temporal weights (directory from save_temporal_weights, or a .safetensors file)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompt", help="one text prompt")
    src.add_argument("--prompts-file", help="text file, one prompt per line (blank lines skipped)")
    p.add_argument("--negative-prompt", default=None, help="negative prompt for every video")
    p.add_argument("--out", default=None,
                   help="output file (.gif/.mp4) for --prompt (default video.gif); "
                        "output directory for --prompts-file (default samples/)")
    p.add_argument("--format", choices=("gif", "mp4"), default="gif", help="file type with --prompts-file")
    p.add_argument("--frames", type=int, default=16, help="frames per video (>= 1)")
    p.add_argument("--steps", type=int, default=25, help="denoising steps")
    p.add_argument("--guidance-scale", type=float, default=7.5, help="classifier-free guidance weight")
    p.add_argument("--height", type=int, default=None, help="pixels, multiple of 8 (default: model's)")
    p.add_argument("--width", type=int, default=None, help="pixels, multiple of 8 (default: model's)")
    p.add_argument("--seed", type=int, default=0, help="video i uses seed + i")
    p.add_argument("--fps", type=float, default=8.0, help="frames per second of the written file")
    p.add_argument("--scheduler", choices=("ddim", "model"), default="ddim",
                   help="DDIM (default) or the scheduler saved with the model")
    p.add_argument("--decode-chunk-size", type=int, default=16,
                   help="frames per VAE decode call (fewer: less decoder memory)")
    p.add_argument("--device", default=None,
                   help="torch device (default: this process' accelerate device: cuda if available, else cpu)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                   help="model dtype (default: fp16 on CUDA, fp32 elsewhere)")
    p.add_argument("--backend", choices=("auto", "torch", "triton", "cuda"), default="auto",
                   help="kernel backend of the temporal modules")
    p.add_argument("--fast", action="store_true",
                   help="fast sampling mode (pipe.enable_fast_sampling(): fused QKV, channels_last, "
                        "torch.compile of the UNet, CUDA graphs on CUDA); the first video compiles")
    p.set_defaults(handler=run)
    return p


def read_prompts(path: str) -> List[str]:
    """The non-empty, stripped lines of ``path``."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"--prompts-file {path!r} does not exist")
    with open(path, encoding="utf-8") as fh:
        prompts = [line.strip() for line in fh if line.strip()]
    if not prompts:
        raise ValueError(f"--prompts-file {path!r} holds no prompts")
    return prompts


def output_name(index: int, prompt: str, suffix: str) -> str:
    """``00003_a_cat_running.gif``: index first (unique), then a filesystem-safe slug of the prompt."""
    slug = re.sub(r"[^A-Za-z0-9]+", "_", prompt).strip("_")[:60] or "video"
    return f"{index:05d}_{slug}.{suffix}"


def plan_jobs(args) -> List[Tuple[int, str, str]]:
    """``[(index, prompt, output path)]`` for every video to sample, across all processes."""
    if args.prompt is not None:
        out = args.out or "video.gif"
        if not out.lower().endswith((".gif", ".mp4")):
            raise ValueError(f"--out {out!r} must end in .gif or .mp4")
        return [(0, args.prompt, out)]
    out_dir = args.out or "samples"
    return [(i, p, os.path.join(out_dir, output_name(i, p, args.format)))
            for i, p in enumerate(read_prompts(args.prompts_file))]


def run(args) -> int:
    import torch
    from accelerate import PartialState
    from tqdm.auto import tqdm

    from ..pipeline import TFAAPipeline
    from ..video_io import save_video

    if args.frames < 1:
        raise SystemExit(f"error: --frames must be >= 1, got {args.frames}")
    for name in ("height", "width"):
        value = getattr(args, name)
        if value is not None and (value <= 0 or value % 8):
            raise SystemExit(f"error: --{name} must be a positive multiple of 8, got {value}")
    if not os.path.isdir(args.model):
        raise SystemExit(f"error: --model directory {args.model!r} does not exist")
    jobs = plan_jobs(args)

    state = PartialState(cpu=args.device == "cpu")
    device = torch.device(args.device) if args.device else state.device
    dtype_name = DTYPES[args.dtype] if args.dtype else ("float16" if device.type == "cuda" else "float32")
    pipe = TFAAPipeline.from_sd(args.model, temporal_weights=args.temporal_weights,
                                scheduler=args.scheduler, torch_dtype=getattr(torch, dtype_name))
    pipe.unet.set_backend(args.backend)
    pipe.to(device)
    if args.fast:
        pipe.enable_fast_sampling()
    pipe.set_progress_bar_config(disable=True)

    with state.split_between_processes(jobs) as my_jobs:
        for index, prompt, path in tqdm(my_jobs, desc=f"sampling (process {state.process_index})",
                                        disable=len(my_jobs) < 2):
            frames = pipe(prompt, num_frames=args.frames, height=args.height, width=args.width,
                          num_inference_steps=args.steps, guidance_scale=args.guidance_scale,
                          negative_prompt=args.negative_prompt, seed=args.seed + index,
                          decode_chunk_size=args.decode_chunk_size, output_type="np").frames[0]
            save_video(frames, path, fps=args.fps)
            print(f"[process {state.process_index}] {path}: {prompt!r}", flush=True)
    state.wait_for_everyone()
    return 0
