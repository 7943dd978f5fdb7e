"""TMA (tensor-memory-accelerator) tiles of ``(N, C, H, W)`` frame tensors for the Triton kernels.

A frame tensor whose pixels (NCHW-like) or channels (channels_last-like) are contiguous is read
through a device-side tensor descriptor over ``(clips, F, C, H*W)`` (NCHW) or ``(clips, F, H*W, C)``
(channels_last) instead of a per-element pointer tensor: the copy engine computes the addresses
(a 128 x 64 pointer tile costs each of 256 threads 32 int64 adds and compares per loop step) and
zero-fills everything out of bounds, channel and pixel tails *and* frames -1, -2, ... and F, F+1,
... of a clip (a tap that falls outside its clip reads zeros without a mask).

Host side: :func:`tma_orientation` says whether (and how) a tensor qualifies (16-byte aligned base
and strides, one flat pixel stride, Hopper or newer, or the interpreter), :func:`tma_workspace`
runs a launch with the global-memory workspace the descriptors need (Triton asks an allocator
for it; set only for that launch, so no process-wide allocator is installed).
"""
from __future__ import annotations

import contextvars
import functools
from typing import Callable, Optional

import torch
import triton
import triton.language as tl

from ..backends import triton_interpret
from ._layout import _pixel_strides


@triton.jit
def _frames_desc(ptr, NB, F, C, HW, s_n, s_c, s_p, CL: tl.constexpr,
                 BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """Descriptor of the NB clips of F frames of a (NB*F, C, HW) tensor with frame stride s_n,
    channel stride s_c and pixel stride s_p (s_p == 1, or s_c == 1 with CL); tiles of
    BLOCK_P pixels x BLOCK_C channels of one frame."""
    s_b = s_n.to(tl.int64) * F
    # one return per constexpr branch (Triton type-checks a return after an `if CL: return`)
    if CL:
        desc = tl.make_tensor_descriptor(ptr, [NB, F, HW, C], [s_b, s_n, s_p, 1], [1, 1, BLOCK_P, BLOCK_C])
    else:
        desc = tl.make_tensor_descriptor(ptr, [NB, F, C, HW], [s_b, s_n, s_c, 1], [1, 1, BLOCK_C, BLOCK_P])
    return desc


@triton.jit
def _tma_load(desc, clip, frame, p0, c0, CL: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """The [BLOCK_P, BLOCK_C] tile (pixels p0.., channels c0..) of frame ``frame`` of clip ``clip``;
    zeros where it leaves the tensor or the clip."""
    if CL:
        tile = desc.load([clip, frame, p0, c0]).reshape(BLOCK_P, BLOCK_C)
    else:
        tile = desc.load([clip, frame, c0, p0]).reshape(BLOCK_C, BLOCK_P).T
    return tile


@triton.jit
def _tma_load_cp(desc, clip, frame, p0, c0, CL: tl.constexpr, BLOCK_P: tl.constexpr, BLOCK_C: tl.constexpr):
    """The same tile as :func:`_tma_load`, channels first: [BLOCK_C, BLOCK_P] (for NCHW-like
    tensors the box as loaded, no transpose)."""
    if CL:
        tile = desc.load([clip, frame, p0, c0]).reshape(BLOCK_P, BLOCK_C).T
    else:
        tile = desc.load([clip, frame, c0, p0]).reshape(BLOCK_C, BLOCK_P)
    return tile


@triton.jit
def _tma_store(desc, clip, frame, p0, c0, tile, CL: tl.constexpr, BLOCK_P: tl.constexpr,
               BLOCK_C: tl.constexpr):
    """Store a [BLOCK_P, BLOCK_C] tile; the parts out of bounds are dropped."""
    if CL:
        desc.store([clip, frame, p0, c0], tile.reshape(1, 1, BLOCK_P, BLOCK_C))
    else:
        desc.store([clip, frame, c0, p0], tile.T.reshape(1, 1, BLOCK_C, BLOCK_P))


@functools.lru_cache(maxsize=None)
def _device_has_tma(index: int) -> bool:
    return torch.cuda.get_device_capability(index)[0] >= 9


def tma_capable(device: torch.device) -> bool:
    """True where the kernels may take their TMA paths: the interpreter, or an sm_90+ GPU."""
    if triton_interpret():
        return True
    return device.type == "cuda" and _device_has_tma(device.index if device.index is not None
                                                     else torch.cuda.current_device())


def tma_orientation(t: torch.Tensor, num_frames: int) -> Optional[bool]:
    """How a descriptor can tile the (N, C, H, W) frames of ``t``: False (pixels contiguous, NCHW-like),
    True (channels contiguous, channels_last-like) or None (not at all: pixels that do not merge into
    one stride, neither axis contiguous, a base or a stride not 16-byte aligned, N not a multiple of
    ``num_frames``, or no TMA on this device)."""
    if t.dim() != 4 or t.numel() == 0 or t.shape[0] % num_frames or not tma_capable(t.device):
        return None
    _, s_w, flat = _pixel_strides(t)
    if not flat:
        return None
    n, c, h, w = t.shape
    if s_w == 1 and (h * w > 1 or c == 1):
        cl, row = False, t.stride(1)
    elif t.stride(1) == 1:
        cl, row = True, s_w
    else:
        return None
    es = t.element_size()
    if t.data_ptr() % 16 or (row * es) % 16 or (t.stride(0) * es) % 16:
        return None
    return cl


def tma_strides_ok(t: torch.Tensor) -> bool:
    """A tensor a descriptor can tile as it is laid out (e.g. a (K, R, C) weight or (B*F, L, H, D)
    attention tokens): last axis contiguous, base and every other stride 16-byte aligned."""
    es = t.element_size()
    return (t.stride(-1) == 1 and t.data_ptr() % 16 == 0
            and all((t.stride(i) * es) % 16 == 0 for i in range(t.dim() - 1)))


def tma_workspace(device: torch.device, launch: Callable[[], None], needed: bool = True) -> None:
    """Run ``launch`` with a Triton allocator for the descriptors' workspace (a torch allocation on
    ``device``, so CUDA-graph capture and the caching allocator see it), in a copied context: the
    caller's allocator setting is left as it was. ``needed=False`` (the launch builds no
    descriptors) just runs it."""
    if not needed:
        launch()
        return

    def alloc(size: int, alignment: int, stream: Optional[int]):
        return torch.empty(size, dtype=torch.int8, device=device)

    def run():
        triton.set_allocator(alloc)
        launch()

    contextvars.copy_context().run(run)
