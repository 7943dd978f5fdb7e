"""The temporal modules alone, as a diffusers ModelMixin/ConfigMixin (like diffusers' MotionAdapter)."""
from __future__ import annotations

from typing import Dict, List

from diffusers.configuration_utils import ConfigMixin, register_to_config
from diffusers.models.modeling_utils import ModelMixin
from torch import nn

from .temporal_conv import TemporalConvBlock
from .tfaa_block import TFAABlock


def module_key(path: str) -> str:
    """The ModuleDict key of the temporal block attached to the UNet submodule at ``path``
    (``"down_blocks.0.resnets.1"`` -> ``"down_blocks_0_resnets_1"``)."""
    return path.replace(".", "_")


class TemporalWeights(ModelMixin, ConfigMixin):
    """Every temporal block of a video UNet, keyed by the UNet submodule it follows.

    ``conv_blocks[key]``: a :class:`TemporalConvBlock` after the ResNet at that path;
    ``tfaa_blocks[key]``: a :class:`TFAABlock` after the BasicTransformerBlock at that path.
    ``save_pretrained(dir)`` writes ``config.json`` + ``diffusion_pytorch_model.safetensors``.

    Args:
        conv_channels: ``{key: C}`` for each ResNet (in UNet order).
        tfaa_dims: ``{key: [C, heads]}`` for each BasicTransformerBlock (in UNet order).
        conv_num_layers, conv_kernel_size, norm_num_groups, norm_eps: temporal conv block shape.
        tfaa_mode: ``"temporal"`` or ``"spatial"`` (see :class:`TFAABlock`).
    """

    @register_to_config
    def __init__(self, conv_channels: Dict[str, int], tfaa_dims: Dict[str, List[int]],
                 conv_num_layers: int = 4, conv_kernel_size: int = 3, norm_num_groups: int = 32,
                 norm_eps: float = 1e-5, tfaa_mode: str = "temporal"):
        super().__init__()
        self.conv_blocks = nn.ModuleDict({
            key: TemporalConvBlock(c, conv_num_layers, conv_kernel_size, norm_num_groups, norm_eps)
            for key, c in conv_channels.items()})
        self.tfaa_blocks = nn.ModuleDict({
            key: TFAABlock(dim, heads, mode=tfaa_mode) for key, (dim, heads) in tfaa_dims.items()})

    def set_backend(self, backend: str) -> None:
        """Kernel backend of every block: ``"auto"``, ``"torch"``, ``"triton"`` or ``"cuda"``."""
        for block in list(self.conv_blocks.values()) + list(self.tfaa_blocks.values()):
            block.backend = backend

    def forward(self, *args, **kwargs):
        raise NotImplementedError("TemporalWeights holds weights only; run them through VideoUNet")
