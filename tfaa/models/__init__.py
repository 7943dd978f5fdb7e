"""Model modules: frame position embedding, TFAA block, temporal conv block, video UNet.

- :class:`FramePositionEmbedding` ``(dim)``: ``forward(num_frames, device, dtype) -> (F, dim)``
- :class:`TFAABlock` ``(dim, num_heads, mode="temporal", backend="auto")``: ``(B*F, L, C) -> same``
- :class:`TemporalConvBlock` ``(channels, num_layers=4, kernel_size=3)``: ``(B*F, C, H, W) -> same``
- :class:`TemporalWeights`: all temporal blocks of a video UNet (ModelMixin/ConfigMixin)
- :class:`VideoUNet`: an inflated SD 1.x ``UNet2DConditionModel``
- :func:`load_unet2d`, :func:`unet_diffusers_to_ldm`: SD 1.x weight loading / key conversion
"""
from .position import FramePositionEmbedding
from .sd_loading import load_unet2d, unet_diffusers_to_ldm
from .temporal_conv import TemporalConv1d, TemporalConvBlock
from .temporal_weights import TemporalWeights
from .tfaa_block import TFAA_MODES, TFAABlock
from .video_unet import VideoUNet
from .weights_io import load_state_dict_file

__all__ = ["FramePositionEmbedding", "TFAABlock", "TFAA_MODES", "TemporalConv1d", "TemporalConvBlock",
           "TemporalWeights", "VideoUNet", "load_unet2d", "unet_diffusers_to_ldm", "load_state_dict_file"]
