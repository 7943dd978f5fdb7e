"""Host-side integer helpers for launch grids and block sizes.

``triton.cdiv`` / ``triton.next_power_of_2`` are Triton ``ConstexprFunction`` objects: called from
Python they go through Triton's JIT call machinery (~1.5 us each on a fast host, several us under
load). The launch code of a backward pass calls them hundreds of times (e.g. the weight-gradient
split search), which made host time exceed GPU time for small and medium shapes. These plain
Python versions give the same results for non-negative ints; kernels keep using ``tl.cdiv``.
"""
from __future__ import annotations

__all__ = ["cdiv", "next_power_of_2"]


def cdiv(a: int, b: int) -> int:
    """ceil(a / b) for ints, b > 0."""
    return -(-a // b)


def next_power_of_2(n: int) -> int:
    """The smallest power of two >= n for n >= 1 (0 for n == 0, as triton.next_power_of_2)."""
    return max(int(n), 0) if n <= 1 else 1 << (int(n) - 1).bit_length()
