"""Fast sampling mode of :class:`~tfaa.pipeline.TFAAPipeline` (``pipe.enable_fast_sampling()``,
``tfaa sample --fast``).

What it changes, in place, all of it result-preserving up to floating-point reassociation
(bf16 tolerance; the fast-vs-normal test is ``tests/test_fast_sampling.py``):

1. **Fused projections**: the UNet's attention layers compute Q/K/V of self-attention in one GEMM
   and K/V of cross-attention in one GEMM (diffusers ``fuse_qkv_projections``); the same for the
   VAE's mid-block attention. Our TFAA blocks already use a packed ``qkv`` Linear.
2. **channels_last**: the 4-D conv weights of the UNet (cuDNN's / inductor's faster NHWC
   convolutions; the temporal conv kernels take either layout). The VAE stays NCHW: its decoder was
   measured slower in channels_last (16 frames at 512 px on an H100: 262-274 ms against 228-240 ms).
3. **torch.compile of the UNet**, ``fullgraph=True`` (a graph break is an error, not a silent
   slowdown): the tfaa kernels are ``torch.library`` custom ops with fake implementations, so
   inductor traces straight through the temporal blocks' forward hooks. The compiled module is the
   inner ``UNet2DConditionModel`` (``pipe.unet.unet``): ``VideoUNet.forward`` only sets the frame
   count (read by the hooks, and guarded on by dynamo: a new frame count recompiles once) and
   reshapes its arguments. On CUDA the default mode is ``"reduce-overhead"``: CUDA graphs replay
   each denoising step's ~1k kernel launches as one graph. Shapes are static (``dynamic=False``):
   a new video size compiles a new graph. In channels_last the temporal convs of frames >= 32x32
   run the Triton kernel under ``backend="auto"`` (tfaa_kernels.ops.conv).
4. **Up-block GroupNorms as one opaque op** (compiled with inductor, on CUDA with Triton): the first GroupNorm
   of each up-block ResNet (``norm1``, whose input is the ``torch.cat`` of the upsampled features and
   the skip connection) runs as the tfaa Triton GroupNorm custom op (:class:`OpaqueGroupNorm`).
   Inductor otherwise stores that concatenation NCHW (its GroupNorm reduction prefers it) and then
   reads it back transposed to write the channels_last tensors the convolutions take; an opaque op
   that takes the eager (channels_last) strides makes it store the concatenation channels_last
   (SD-size UNet, 2x16 frames at 512 px, H100: compiled step 93.9 -> 90.8 ms; RESULTS.md Session 8).
5. **torch.compile of the VAE decoder** (on CUDA, with the UNet): the same mode without CUDA graphs,
   since the chunked decode concatenates outputs that a graph replay would overwrite.

Everything is applied to the modules themselves, so ``pipe`` keeps its types (``pipe.unet`` is
still a :class:`~tfaa.models.VideoUNet`, saving works). The first call of a new shape pays the
compilation (about two minutes for the SD-size UNet and VAE on an H100); later calls are fast.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Optional

import torch
from torch import nn

import tfaa_kernels
from tfaa.models.spatial_norm_act import GroupNormModule

COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs", "none")


@dataclass(frozen=True)
class FastSamplingConfig:
    """What :func:`enable_fast_sampling` applied to a pipeline (``pipe.fast_sampling``)."""

    fuse_qkv: bool
    channels_last: bool
    compile_mode: Optional[str]      # None: the UNet is not compiled
    compile_backend: Optional[str]
    compile_vae: bool
    opaque_up_block_norms: bool = False

    def describe(self) -> str:
        parts = []
        if self.fuse_qkv:
            parts.append("fused QKV/KV projections")
        if self.channels_last:
            parts.append("channels_last")
        if self.compile_mode is not None:
            parts.append(f"torch.compile(UNet, fullgraph, backend={self.compile_backend}, mode={self.compile_mode})")
        if self.opaque_up_block_norms:
            parts.append("up-block GroupNorms as Triton ops")
        if self.compile_vae:
            parts.append("compiled VAE decoder")
        return ", ".join(parts) or "nothing"

    def as_dict(self) -> dict:
        return asdict(self)


def resolve_compile_mode(mode: str, device: torch.device) -> Optional[str]:
    """``"auto"`` -> ``"reduce-overhead"`` (CUDA graphs) on CUDA, ``"default"`` elsewhere;
    ``"none"`` -> None (no compilation); other names pass through after validation."""
    if mode not in COMPILE_MODES:
        raise ValueError(f"compile mode must be one of {COMPILE_MODES}, got {mode!r}")
    if mode == "none":
        return None
    if mode == "auto":
        return "reduce-overhead" if device.type == "cuda" else "default"
    if "cudagraphs" not in mode and mode in ("reduce-overhead", "max-autotune") and device.type != "cuda":
        raise ValueError(f"compile mode {mode!r} uses CUDA graphs and needs the pipeline on a CUDA "
                         f"device (it is on {device}); use 'default' or 'auto'")
    return mode


def vae_compile_mode(mode: str) -> str:
    """The VAE decoder's compile mode: ``mode`` without CUDA graphs. The pipeline decodes a video in
    chunks and concatenates them; a CUDA-graphed decoder returns its static output buffer, which the
    next chunk's replay overwrites before the concatenation (torch raises "accessing tensor output
    of CUDAGraphs that has been overwritten"). A few large decoder calls per video gain little from
    graphs anyway."""
    return {"reduce-overhead": "default", "max-autotune": "max-autotune-no-cudagraphs"}.get(mode, mode)


class OpaqueGroupNorm(GroupNormModule):
    """``nn.GroupNorm`` computed by :func:`tfaa_kernels.group_norm_silu` (no activation) with an
    explicit backend, so that under torch.compile it stays one custom op (inductor does not
    decompose it; the op receives its input in eager strides). Holds the wrapped module's
    ``weight``/``bias`` parameters under the same names (same state_dict keys).

    Input/output: ``(N, C, H, W)``, any memory format (kept)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return tfaa_kernels.group_norm_silu(x, self.num_groups, self.weight, self.bias, self.eps,
                                            activation=None, backend=self.backend)


def make_up_block_norms_opaque(unet, backend: str) -> int:
    """Replace ``norm1`` (an ``nn.GroupNorm``) of every ResNet in ``unet.up_blocks`` by an
    :class:`OpaqueGroupNorm` of ``backend``; returns how many were replaced (see the module
    docstring, item 4). The values are GroupNorm's up to the kernel's floating-point order."""
    count = 0
    for block in getattr(unet, "up_blocks", []):
        for resnet in getattr(block, "resnets", []):
            if isinstance(getattr(resnet, "norm1", None), nn.GroupNorm):
                resnet.norm1 = OpaqueGroupNorm(resnet.norm1, backend)
                count += 1
    return count


def _fuse_projections(module) -> None:
    """diffusers' ``fuse_qkv_projections`` on a UNet2DConditionModel or AutoencoderKL, once."""
    if getattr(module, "original_attn_processors", None) is not None:  # already fused
        return
    module.fuse_qkv_projections()


def enable_fast_sampling(pipe, *, fuse_qkv: bool = True, channels_last: bool = True,
                         compile_mode: str = "auto", compile_backend: str = "inductor",
                         compile_vae: Optional[bool] = None) -> FastSamplingConfig:
    """Switch ``pipe`` (a :class:`~tfaa.pipeline.TFAAPipeline`) to the fast sampling mode; see the
    module docstring. Move the pipeline to its device and dtype *before* calling this.

    Args:
        fuse_qkv: fuse the UNet's and VAE's attention projections.
        channels_last: NHWC conv weights in the UNet (the VAE keeps NCHW, its faster layout).
        compile_mode: ``"auto"`` (``"reduce-overhead"`` on CUDA, ``"default"`` elsewhere), a
            ``torch.compile`` mode, or ``"none"`` to skip compilation.
        compile_backend: ``torch.compile`` backend (``"inductor"``; ``"aot_eager"`` traces the
            same graph without code generation, e.g. for quick CPU checks).
        compile_vae: also compile the VAE decoder (``fullgraph``, static shapes; every distinct
            ``decode_chunk_size`` remainder compiles once), in the UNet's mode without CUDA graphs
            (:func:`vae_compile_mode`). Default (None): on CUDA whenever the UNet is compiled (16
            frames at 512 px on an H100: decode 139 ms compiled vs 242 ms eager, for ~1 min more
            of first-call compilation); never without UNet compilation.

    Returns: the :class:`FastSamplingConfig` applied, also stored as ``pipe.fast_sampling``.
    Raises ``RuntimeError`` when called twice with different settings.
    """
    device = pipe.unet.device
    mode = resolve_compile_mode(compile_mode, device)
    if compile_vae is None:
        compile_vae = device.type == "cuda"
    config = FastSamplingConfig(fuse_qkv=bool(fuse_qkv), channels_last=bool(channels_last),
                                compile_mode=mode, compile_backend=compile_backend if mode else None,
                                compile_vae=bool(compile_vae) and mode is not None,
                                opaque_up_block_norms=(mode is not None and compile_backend == "inductor"
                                                       and device.type == "cuda"
                                                       and "triton" in tfaa_kernels.available_backends(device)))
    previous = getattr(pipe, "fast_sampling", None)
    if previous is not None:
        if previous != config:
            raise RuntimeError(f"fast sampling is already enabled ({previous.describe()}); build a new "
                               "pipeline to apply different settings")
        return previous

    inner = pipe.unet.unet  # the spatial UNet2DConditionModel, carrying the temporal hooks
    if fuse_qkv:
        _fuse_projections(inner)
        _fuse_projections(pipe.vae)
    if channels_last:
        pipe.unet.to(memory_format=torch.channels_last)
    if config.opaque_up_block_norms:
        make_up_block_norms_opaque(inner, "triton")
    if mode is not None:
        if compile_backend == "inductor":
            # 1x1 convolutions (the ResNets' shortcuts, proj_in/out) as GEMMs: diffusers' SD recipe
            torch._inductor.config.conv_1x1_as_mm = True
        inner.compile(fullgraph=True, dynamic=False, backend=compile_backend,
                      **({"mode": mode} if compile_backend == "inductor" else {}))
        if config.compile_vae:
            vae_mode = vae_compile_mode(mode)
            pipe.vae.decoder.compile(fullgraph=True, dynamic=False, backend=compile_backend,
                                     **({"mode": vae_mode} if compile_backend == "inductor" else {}))
    pipe.fast_sampling = config
    return config
