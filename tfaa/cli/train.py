"""``tfaa train``: train the temporal modules from a YAML config (see ``tfaa.train.config``).

Examples::

    tfaa train --config configs/ucf101.yaml
    tfaa train --config cfg.yaml --resume                 # newest complete checkpoint in output_dir
    tfaa train --config cfg.yaml --resume runs/x/checkpoints/step_00001000
    tfaa train --config cfg.yaml --set train.max_steps=20 --set data.size=128
    accelerate launch --num_processes 2 -m tfaa train --config cfg.yaml   # DDP

The config is checked (unknown keys, types, ranges, paths) before any model is built; a bad
config exits with status 2 and a message naming the key.
"""
from __future__ import annotations

import argparse
import json
import sys


def _parse_set(items):
    import yaml

    out = {}
    for item in items or []:
        if "=" not in item:
            raise ValueError(f"--set expects KEY=VALUE (e.g. train.max_steps=10), got {item!r}")
        key, value = item.split("=", 1)
        out[key.strip()] = yaml.safe_load(value)
    return out


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("train", help="train the temporal modules (TFAA + temporal conv)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--config", required=True, help="YAML training config")
    p.add_argument("--resume", nargs="?", const="latest", default=None,
                   help="resume from the newest checkpoint in output_dir (no value) or from a checkpoint folder")
    p.add_argument("--output-dir", default=None, help="override output_dir")
    p.add_argument("--max-steps", type=int, default=None, help="override train.max_steps")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", default=[],
                   help="override any config key (dotted, YAML value), repeatable")
    p.add_argument("--check", action="store_true", help="only validate the config and list the data, then exit")
    p.set_defaults(handler=run)
    return p


def run(args) -> int:
    from tfaa.train import ConfigError, load_config, train
    from tfaa.train.data_setup import load_records

    try:
        overrides = _parse_set(args.set)
        if args.resume is not None:
            overrides["train.resume"] = args.resume
        if args.output_dir is not None:
            overrides["output_dir"] = args.output_dir
        if args.max_steps is not None:
            overrides["train.max_steps"] = args.max_steps
        cfg = load_config(args.config, overrides=overrides)
        if args.check:
            if cfg.data.format == "synthetic":
                print(f"config OK; synthetic data: {cfg.data.synthetic_num_videos} videos")
            else:
                print(f"config OK; {len(load_records(cfg.data, cfg.output_dir))} videos listed")
            return 0
    except (ConfigError, ValueError, FileNotFoundError) as exc:
        print(f"tfaa train: error: {exc}", file=sys.stderr)
        return 2
    results = train(cfg)
    summary = {k: results[k] for k in ("final_step", "last_checkpoint", "skipped_videos", "world_size",
                                       "trainable_parameters", "total_parameters", "frames_per_second",
                                       "frames_per_second_median_step", "peak_memory_bytes")}
    summary["last_loss"] = results["losses"][-1] if results["losses"] else None
    summary["resumed_from"] = results.get("resumed_from")
    print(json.dumps(summary, indent=1))
    return 0
