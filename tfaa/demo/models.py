"""The demo's tiny text-to-image model: a pixel-space UNet2DConditionModel and a tiny CLIP text model.

Stand-in for pretrained Stable Diffusion at toy scale. Instead of a VAE, frames are packed by a
fixed, lossless 2x2 space-to-depth (:func:`pack_pixels`: ``(N, 3, H, W)`` in [-1, 1] ->
``(N, 12, H/2, W/2)``), so the UNet works on "latents" that decode exactly (:func:`unpack_pixels`).
"""
from __future__ import annotations

import os
from typing import Tuple

import torch
import torch.nn.functional as F

from .config import NUM_TRAIN_TIMESTEPS, DemoConfig

__all__ = ["PACK", "pack_pixels", "unpack_pixels", "build_unet", "build_tokenizer", "build_text_encoder",
           "noise_scheduler", "sampling_scheduler", "save_image_model", "load_image_model", "TEXT_DIM",
           "TEXT_LENGTH"]

PACK = 2  #: space-to-depth factor of the pixel "autoencoder"
TEXT_DIM = 32  #: hidden size of the text encoder = cross_attention_dim of the UNet
TEXT_LENGTH = 32  #: tokenizer length (the demo's captions are ~26 byte-level tokens)


def pack_pixels(images: torch.Tensor) -> torch.Tensor:
    """``(N, 3, H, W)`` -> ``(N, 3*PACK^2, H/PACK, W/PACK)`` (lossless)."""
    return F.pixel_unshuffle(images, PACK)


def unpack_pixels(latents: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`pack_pixels`."""
    return F.pixel_shuffle(latents, PACK)


def build_unet(cfg: DemoConfig, seed: int):
    """The image UNet (SD 1.x layout, one ResNet per block): no attention at the full-resolution level
    (self-attention over all its tokens would dominate the CPU time), cross-attention at every lower one."""
    from diffusers import UNet2DConditionModel

    levels = len(cfg.channels)
    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=cfg.size // PACK, in_channels=3 * PACK * PACK, out_channels=3 * PACK * PACK,
        layers_per_block=1, block_out_channels=tuple(cfg.channels),
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (levels - 1),
        up_block_types=("CrossAttnUpBlock2D",) * (levels - 1) + ("UpBlock2D",),
        cross_attention_dim=TEXT_DIM, attention_head_dim=8, norm_num_groups=16)


def build_tokenizer(directory: str):
    """A byte-level CLIP tokenizer from the vocab files of :func:`tfaa.testing.write_tiny_clip_vocab`,
    saved in ``directory`` (every caption character is distinguishable)."""
    from transformers import CLIPTokenizer

    from tfaa.testing import write_tiny_clip_vocab

    write_tiny_clip_vocab(directory)
    return CLIPTokenizer.from_pretrained(directory, model_max_length=TEXT_LENGTH)


def build_text_encoder(tokenizer, seed: int):
    """A 2-layer CLIP text model (hidden 32), random; trained with the image UNet only when
    ``DemoConfig.train_text_encoder``."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(vocab_size=len(tokenizer), hidden_size=TEXT_DIM, intermediate_size=64,
                            num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=TEXT_LENGTH,
                            bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                            pad_token_id=tokenizer.pad_token_id, projection_dim=TEXT_DIM)
    torch.manual_seed(seed)
    return CLIPTextModel(config)


_SCHEDULE = dict(num_train_timesteps=NUM_TRAIN_TIMESTEPS, beta_schedule="squaredcos_cap_v2", prediction_type="v_prediction",
                 clip_sample=False)


def noise_scheduler():
    """The training noise schedule (cosine betas for small pixel images, v-prediction)."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(**_SCHEDULE)


def sampling_scheduler():
    """DDIM with the training schedule (trailing timesteps, so sampling starts from pure noise)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(**_SCHEDULE, timestep_spacing="trailing", set_alpha_to_one=True)


def save_image_model(directory: str, unet, text_encoder, tokenizer) -> None:
    """``directory/unet``, ``text_encoder``, ``tokenizer`` (diffusers / transformers folders)."""
    unet.save_pretrained(os.path.join(directory, "unet"))
    text_encoder.save_pretrained(os.path.join(directory, "text_encoder"))
    tokenizer.save_pretrained(os.path.join(directory, "tokenizer"))


def load_image_model(directory: str) -> Tuple[object, object, object]:
    """``(unet, text_encoder, tokenizer)`` written by :func:`save_image_model`, in eval mode."""
    from diffusers import UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    unet = UNet2DConditionModel.from_pretrained(os.path.join(directory, "unet")).eval()
    text_encoder = CLIPTextModel.from_pretrained(os.path.join(directory, "text_encoder")).eval()
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(directory, "tokenizer"))
    return unet, text_encoder, tokenizer
