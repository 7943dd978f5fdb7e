"""``tfaa bench``: the end-to-end sampling benchmark (``benchmarks/bench_sampling.py``): per-step
UNet time and peak memory of our video UNet against UNet2D, AnimateDiff and ModelScope UNets,
whole-video time in normal and fast mode, and the step-time-vs-frames plot. Needs a source checkout
(the benchmarks/ directory beside the tfaa package)."""
from __future__ import annotations

import argparse
import importlib.util
import os
import sys

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                     "benchmarks", "bench_sampling.py")


def _load_bench():
    if "tfaa_bench_sampling" in sys.modules:
        return sys.modules["tfaa_bench_sampling"]
    if not os.path.isfile(BENCH):
        raise SystemExit(f"error: {BENCH} not found; tfaa bench runs from a source checkout of tfaa")
    spec = importlib.util.spec_from_file_location("tfaa_bench_sampling", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def add_parser(subparsers) -> argparse.ArgumentParser:
    p = subparsers.add_parser("bench", help="end-to-end sampling benchmark (benchmarks/bench_sampling.py)",
                              description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.set_defaults(handler=run)
    if os.path.isfile(BENCH):  # the benchmark's own options (--smoke, --results, ...)
        _load_bench().build_arg_parser(p)
    return p


def run(args) -> int:
    bench = _load_bench()
    return int(bench.main_with_args(args) or 0)
