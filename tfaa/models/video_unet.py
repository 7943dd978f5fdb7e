"""The video UNet: a diffusers SD 1.x ``UNet2DConditionModel`` inflated with temporal modules.

Layout: a batch of ``B`` videos of ``F`` frames is ``B*F`` images, row ``n = b*F + f``, exactly
what the 2D UNet sees. The spatial UNet is kept as is (``self.unet``, same state-dict keys as the
image model); the temporal blocks live in ``self.temporal`` (:class:`TemporalWeights`) and run
as forward hooks of the spatial modules they follow (thesis Fig. 3.1/3.2):

- after every ``ResnetBlock2D`` (down, mid, up): a :class:`TemporalConvBlock` on ``(B*F, C, h, w)``;
- after every ``BasicTransformerBlock`` inside each ``Transformer2DModel``: a :class:`TFAABlock`
  on its ``(B*F, h*w, C)`` tokens.

``num_frames`` is an argument of :meth:`VideoUNet.forward`. ``num_frames == 1`` is an image:
the temporal blocks are skipped, so the output equals the image UNet's exactly whatever the
temporal weights are. Calling ``video_unet.unet`` directly (outside :meth:`VideoUNet.forward`) runs
the image model alone. A freshly inflated model (zero-initialised output layers) also equals the
image UNet at any ``F``.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Iterator, Optional, Union

import torch
from diffusers import UNet2DConditionModel
from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.attention import BasicTransformerBlock
from diffusers.models.modeling_utils import ModelMixin
from diffusers.models.resnet import ResnetBlock2D
from diffusers.models.unets.unet_2d_condition import UNet2DConditionOutput
from torch import nn

from .spatial_norm_act import fuse_resnet_norm_act, set_norm_act_backend
from .temporal_weights import TemporalWeights, module_key
from .weights_io import load_state_dict_file


class _FrameState:
    """The frame count of the forward pass in flight, shared by all temporal hooks of one model."""

    def __init__(self):
        self.num_frames: Optional[int] = None

    @contextlib.contextmanager
    def use(self, num_frames: int):
        previous, self.num_frames = self.num_frames, num_frames
        try:
            yield
        finally:
            self.num_frames = previous


class _TemporalHook:
    """Forward hook: ``output -> block(output, num_frames)``; identity for ``num_frames`` 1 or None."""

    def __init__(self, block: nn.Module, frames: _FrameState):
        self.block, self.frames = block, frames

    def __call__(self, module, args, output):
        num_frames = self.frames.num_frames
        if num_frames is None or num_frames == 1:  # images (or self.unet called directly)
            return output
        return self.block(output, num_frames)


def _unet_structure(unet: UNet2DConditionModel):
    """``(conv_channels, tfaa_dims, paths)``: the temporal block shapes for ``unet``, in module order."""
    conv_channels, tfaa_dims, paths = {}, {}, {}
    for path, module in unet.named_modules():
        if isinstance(module, ResnetBlock2D):
            conv_channels[module_key(path)] = module.out_channels
            paths[module_key(path)] = path
        elif isinstance(module, BasicTransformerBlock):
            tfaa_dims[module_key(path)] = [module.norm1.normalized_shape[0], module.attn1.heads]
            paths[module_key(path)] = path
    return conv_channels, tfaa_dims, paths


def clean_unet_config(config: Dict[str, Any]) -> Dict[str, Any]:
    """A UNet2DConditionModel config without diffusers' private ``_``-keys, tuples as lists."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dict(config).items()
            if not k.startswith("_")}


class VideoUNet(ModelMixin, ConfigMixin):
    """SD 1.x UNet inflated with TFAA and temporal conv blocks (see the module docstring).

    Args:
        unet_config: the ``UNet2DConditionModel`` config (e.g. :func:`tfaa.testing.sd14_unet_config`).
        conv_num_layers: GroupNorm->SiLU->conv layers per temporal conv block (4).
        conv_kernel_size: temporal conv kernel size K (3).
        tfaa_mode: ``"temporal"`` (default) or ``"spatial"``.
        backend: kernel backend of all temporal blocks (``"auto"``; change with :meth:`set_backend`).
        use_tfaa: add the TFAA blocks (True); False builds the "w/o TFAA" ablation.
        use_temporal_conv: add the temporal conv blocks (True); False builds "w/o temporal conv".

    ``forward(sample (B*F, 4, h, w), timestep, encoder_hidden_states (B*F or B, 77, C), num_frames=F)``.
    """

    _supports_gradient_checkpointing = True

    @register_to_config
    def __init__(self, unet_config: Dict[str, Any], conv_num_layers: int = 4, conv_kernel_size: int = 3,
                 tfaa_mode: str = "temporal", backend: str = "auto", use_tfaa: bool = True,
                 use_temporal_conv: bool = True):
        super().__init__()
        self.unet = UNet2DConditionModel(**clean_unet_config(unet_config))
        conv_channels, tfaa_dims, self._paths = _unet_structure(self.unet)
        conv_channels = conv_channels if use_temporal_conv else {}
        tfaa_dims = tfaa_dims if use_tfaa else {}
        self.temporal = TemporalWeights(
            conv_channels=conv_channels, tfaa_dims=tfaa_dims, conv_num_layers=conv_num_layers,
            conv_kernel_size=conv_kernel_size, norm_num_groups=self.unet.config.norm_num_groups,
            norm_eps=self.unet.config.norm_eps, tfaa_mode=tfaa_mode)
        self.temporal.set_backend(backend)
        self._frames = _FrameState()
        spatial = dict(self.unet.named_modules())
        for blocks in (self.temporal.conv_blocks, self.temporal.tfaa_blocks):
            for key, block in blocks.items():
                spatial[self._paths[key]].register_forward_hook(_TemporalHook(block, self._frames))

    # ------------------------------------------------------------------ construction / loading
    @classmethod
    def from_unet2d(cls, unet: UNet2DConditionModel, **kwargs) -> "VideoUNet":
        """Inflate an image UNet: its weights are copied, temporal blocks freshly initialised
        (``kwargs``: the temporal arguments of :class:`VideoUNet`). Dtype and device follow ``unet``."""
        param = next(unet.parameters())
        video = cls(unet_config=clean_unet_config(unet.config), **kwargs)
        video.unet.load_state_dict(unet.state_dict())
        video.unet.set_attn_processor(unet.attn_processors)
        video.to(param.device)
        return video.to(param.dtype) if param.dtype != torch.float32 else video

    @classmethod
    def from_sd(cls, path: Union[str, os.PathLike], unet_config: Optional[Dict[str, Any]] = None,
                **kwargs) -> "VideoUNet":
        """Inflate SD 1.x UNet weights from a local diffusers directory (pipeline root with ``unet/``
        or a UNet directory) or a single original-SD ``.safetensors`` / ``.ckpt`` file
        (``unet_config`` defaults to SD 1.4's for single files). See :func:`tfaa.models.load_unet2d`."""
        from .sd_loading import load_unet2d

        return cls.from_unet2d(load_unet2d(path, unet_config=unet_config), **kwargs)

    # ------------------------------------------------------------------ forward
    @property
    def in_channels(self) -> int:
        return self.unet.config.in_channels

    def forward(self, sample: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                num_frames: int, return_dict: bool = True, **unet_kwargs):
        """Denoise ``B*F`` frame latents.

        Args:
            sample: ``(B*F, C_in, h, w)``, row ``b*F + f``.
            timestep: a number, or a tensor of ``B*F`` (or ``B``, repeated per frame) timesteps.
            encoder_hidden_states: ``(B*F, 77, C_text)``, or ``(B, 77, C_text)`` (repeated per frame).
            num_frames: ``F >= 1``; ``sample.shape[0]`` must be a multiple of it.
            return_dict: return ``UNet2DConditionOutput(sample=...)`` (True) or a 1-tuple.
            unet_kwargs: passed to ``UNet2DConditionModel.forward`` (e.g. ``cross_attention_kwargs``).

        Returns: the prediction ``(B*F, C_out, h, w)``.
        """
        num_frames = int(num_frames)
        n = sample.shape[0]
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        if n % num_frames != 0:
            raise ValueError(f"sample.shape[0] ({n}) must be a multiple of num_frames ({num_frames})")
        batch = n // num_frames
        if encoder_hidden_states.shape[0] != n:
            if encoder_hidden_states.shape[0] != batch:
                raise ValueError(f"encoder_hidden_states.shape[0] ({encoder_hidden_states.shape[0]}) must be "
                                 f"B*F ({n}) or B ({batch})")
            encoder_hidden_states = encoder_hidden_states.repeat_interleave(num_frames, dim=0)
        if torch.is_tensor(timestep) and timestep.ndim == 1 and timestep.shape[0] == batch != n:
            timestep = timestep.repeat_interleave(num_frames, dim=0)
        with self._frames.use(num_frames):
            out = self.unet(sample, timestep, encoder_hidden_states, return_dict=False, **unet_kwargs)[0]
        return UNet2DConditionOutput(sample=out) if return_dict else (out,)

    # ------------------------------------------------------------------ training helpers
    def freeze_spatial(self) -> "VideoUNet":
        """Only temporal parameters stay trainable (``requires_grad``); returns ``self``."""
        self.unet.requires_grad_(False)
        self.temporal.requires_grad_(True)
        return self

    def temporal_parameters(self) -> Iterator[nn.Parameter]:
        """The parameters of all temporal blocks (TFAA + temporal conv)."""
        return self.temporal.parameters()

    def fuse_spatial_norm_act(self) -> "VideoUNet":
        """Make the GroupNorm+SiLU pairs of the spatial ResNets one op of this UNet's backend
        (:mod:`tfaa.models.spatial_norm_act`: less activation memory in training under autocast;
        ``backend="torch"`` keeps diffusers' computation). Parameter names do not change. Returns
        ``self``; :meth:`set_backend` switches the fused ops too."""
        fuse_resnet_norm_act(self.unet, self.config.backend)
        return self

    def set_backend(self, backend: str) -> None:
        """Kernel backend of every temporal block (and of the fused spatial GroupNorm+SiLU ops, see
        :meth:`fuse_spatial_norm_act`): ``"auto"``, ``"torch"``, ``"triton"``, ``"cuda"``."""
        self.temporal.set_backend(backend)
        set_norm_act_backend(self.unet, backend)
        self.register_to_config(backend=backend)

    def enable_gradient_checkpointing(self, gradient_checkpointing_func=None) -> None:
        """Checkpoint every diffusers block, the temporal hooks they run included. The default
        function recomputes with the forward pass' ``num_frames`` (non-reentrant checkpoint)."""
        if gradient_checkpointing_func is None:
            frames = self._frames

            def gradient_checkpointing_func(module, *args):
                num_frames = frames.num_frames
                return torch.utils.checkpoint.checkpoint(
                    module.__call__, *args, use_reentrant=False,
                    context_fn=lambda: (contextlib.nullcontext(), frames.use(num_frames)))

        self.unet.enable_gradient_checkpointing(gradient_checkpointing_func)

    def disable_gradient_checkpointing(self) -> None:
        self.unet.disable_gradient_checkpointing()

    @property
    def is_gradient_checkpointing(self) -> bool:
        return self.unet.is_gradient_checkpointing

    # ------------------------------------------------------------------ temporal weights I/O
    def save_temporal_weights(self, save_directory: Union[str, os.PathLike]) -> None:
        """Write the temporal blocks alone: ``config.json`` + ``diffusion_pytorch_model.safetensors``."""
        self.temporal.save_pretrained(save_directory, safe_serialization=True)

    def load_temporal_weights(self, path: Union[str, os.PathLike]) -> None:
        """Load temporal weights from a directory written by :meth:`save_temporal_weights` or a
        ``.safetensors`` (or ``weights_only`` torch) file. Keys may carry a ``temporal.`` prefix.

        Raises ``ValueError`` naming missing/unexpected keys and shape mismatches when the weights
        do not fit this UNet.
        """
        state = load_state_dict_file(path)
        if state and all(k.startswith("temporal.") for k in state):
            state = {k[len("temporal."):]: v for k, v in state.items()}
        expected = self.temporal.state_dict()
        missing = [k for k in expected if k not in state]
        unexpected = [k for k in state if k not in expected]
        mismatched = [f"{k}: file {tuple(state[k].shape)} vs model {tuple(v.shape)}"
                      for k, v in expected.items() if k in state and state[k].shape != v.shape]
        if missing or unexpected or mismatched:
            def show(keys):
                return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")
            problems = [f"{name} keys: {show(keys)}" for name, keys in
                        (("missing", missing), ("unexpected", unexpected), ("shape-mismatched", mismatched)) if keys]
            raise ValueError(f"temporal weights {os.fspath(path)!r} do not fit this VideoUNet; "
                             + "; ".join(problems))
        self.temporal.load_state_dict(state)
