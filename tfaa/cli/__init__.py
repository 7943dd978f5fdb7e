"""The ``tfaa`` command: ``tfaa <subcommand> ...`` (also ``python -m tfaa``).

Each subcommand is a module ``tfaa.cli.<name>`` exposing ``add_parser(subparsers)``, which adds
its parser and sets ``handler=<function(args) -> int>`` as a default. Modules listed in
:data:`SUBCOMMANDS` that do not exist (yet) are skipped.
"""
from __future__ import annotations

import argparse
import importlib
import sys
from typing import List, Optional

SUBCOMMANDS = ("sample", "train", "eval", "demo", "bench")


def _subcommand_modules():
    for name in SUBCOMMANDS:
        try:
            yield importlib.import_module(f"{__name__}.{name}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{name}":  # the module exists but one of its imports is missing
                raise


def build_parser() -> argparse.ArgumentParser:
    """The top-level parser with one sub-parser per available subcommand module."""
    parser = argparse.ArgumentParser(prog="tfaa", description="TFAA text-to-video: sampling, training, evaluation")
    from .. import __version__

    parser.add_argument("--version", action="version", version=f"tfaa {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    subparsers.required = True
    for module in _subcommand_modules():
        module.add_parser(subparsers)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the chosen subcommand; returns its exit code."""
    args = build_parser().parse_args(argv)
    try:
        return int(args.handler(args) or 0)
    finally:
        _end_process_group()


def _end_process_group() -> None:
    """Tear down the process group a launched subcommand (train, sample) set up, so that NCCL exits
    cleanly instead of warning about leaked resources."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main())
