"""Autotuning policy shared by the Triton kernels.

On the GPU a kernel decorated with :func:`tunable` is autotuned over its configs (keyed on the
shape arguments named in ``key``); ``TFAA_AUTOTUNE=0`` keeps only the first config that survives
the kernel's own pruning (fast compiles: the GPU test suite uses it). Under the interpreter the
kernel is returned untouched and the launcher passes one small config itself.
"""
from __future__ import annotations

import os
from typing import Callable, Optional, Sequence

import triton

from ..backends import triton_interpret


def autotune_enabled() -> bool:
    return os.environ.get("TFAA_AUTOTUNE", "1") != "0"


def tunable(configs: Sequence[triton.Config], key: Sequence[str], prune: Optional[Callable] = None):
    def wrap(fn):
        if triton_interpret():
            return fn

        def early_prune(cfgs, named_args, **kwargs):
            kept = prune(cfgs, named_args, **kwargs) if prune else list(cfgs)
            return kept if autotune_enabled() else kept[:1]
        return triton.autotune(configs=list(configs), key=list(key),
                               prune_configs_by={"early_config_prune": early_prune})(fn)
    return wrap
