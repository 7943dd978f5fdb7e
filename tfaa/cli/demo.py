"""``tfaa demo``: train and sample a tiny text-to-video model end to end (no downloads).

Examples::

    tfaa demo --out demo/                 # ~8 minutes on a 2-core CPU
    tfaa demo --out demo/ --resume        # reuse the finished stages of an interrupted run
    tfaa demo --out demo/ --overwrite     # start fresh in an existing demo folder
    tfaa demo --out /tmp/d --quick        # seconds: a smoke test, not a usable model
    tfaa demo --out demo/ --device cuda --steps-image 3000 --steps-video 1500

Writes ``contact_sheet.png`` (rows: prompt x model, columns: frames), ``gifs/``, ``report.md`` and
``report.json`` (the temporal-consistency measure for the full model, "w/o TFAA",
"w/o temporal conv" and the real clips), plus the data set and the model weights.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys

#: command-line flag -> DemoConfig field (only flags the user gave override the defaults / --quick)
_SIZE_FLAGS = {"steps_image": int, "steps_video": int, "batch_image": int, "batch_video": int,
               "num_frames": int, "size": int, "sample_steps": int, "samples_per_prompt": int,
               "guidance_scale": float, "lr_image": float, "lr_video": float, "motion_blur": int,
               "tfaa_mode": str, "video_min_timestep": int, "path_start": float}


def add_parser(subparsers) -> argparse.ArgumentParser:
    from tfaa.demo import DemoConfig

    defaults = DemoConfig()
    p = subparsers.add_parser("demo", help="train + sample a tiny text-to-video model end to end (no downloads)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (created; must be empty unless --resume/--overwrite)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--resume", action="store_true", help="reuse the finished stages found in --out")
    mode.add_argument("--overwrite", action="store_true", help="delete the demo in --out and start fresh")
    p.add_argument("--device", default="auto", help="auto (cuda if available, fused kernels via backend='auto'), "
                                                    "cpu, cuda, cuda:N")
    p.add_argument("--seed", type=int, default=defaults.seed, help=f"seed of everything (default {defaults.seed})")
    p.add_argument("--quick", action="store_true", help="tiny settings for tests (seconds; not a usable model)")
    p.add_argument("--prompt", action="append", dest="prompts", metavar="TEXT",
                   help="a prompt 'a <color> <shape> moving <direction>' (repeatable; default: 4 built-in)")
    for name, typ in _SIZE_FLAGS.items():
        p.add_argument("--" + name.replace("_", "-"), type=typ, default=None,
                       help=f"default {getattr(defaults, name)}")
    p.add_argument("--train-text-encoder", action="store_true",
                   help="train the text encoder jointly with the image UNet (default: random and frozen)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run)
    return p


def config_from_args(args):
    """The :class:`tfaa.demo.DemoConfig` of the parsed arguments (``--quick`` first, then explicit flags)."""
    from tfaa.demo import DemoConfig, quick_overrides

    values = dataclasses.asdict(DemoConfig())
    if args.quick:
        values.update(quick_overrides())
    values["seed"] = args.seed
    for name in _SIZE_FLAGS:
        if getattr(args, name) is not None:
            values[name] = getattr(args, name)
    if args.prompts:
        values["prompts"] = tuple(args.prompts)
    if args.train_text_encoder:
        values["train_text_encoder"] = True
    return DemoConfig(**values)


def run(args) -> int:
    from tfaa.demo import DemoConfigError, DemoOutputError, run_demo

    try:
        cfg = config_from_args(args).validate()
        run_demo(args.out, cfg, device=args.device, resume=args.resume, overwrite=args.overwrite,
                 progress=not args.no_progress)
    except (DemoConfigError, DemoOutputError, ValueError) as err:
        print(f"tfaa demo: error: {err}", file=sys.stderr)
        return 2
    return 0
