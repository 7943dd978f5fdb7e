"""Building the models a training run needs: video UNet, VAE, text encoder, tokenizer, DDPM schedule.

Sources (``ModelConfig.source``):

- ``"pretrained"``: a local SD 1.x diffusers folder (``unet/``, ``vae/``, ``text_encoder/``,
  ``tokenizer/``); the UNet is inflated with fresh temporal blocks (:meth:`VideoUNet.from_sd`);
- ``"tiny"``: :func:`tfaa.testing.tiny_sd_components` (random, CPU-fast; tests and the demo);
- ``"sd14-random"``: SD1.4-size UNet, VAE and CLIP text encoder with random weights (the tiny
  tokenizer, so the text encoder's vocabulary is small) — throughput/memory benchmarks.

The noise schedule is always SD's DDPM training schedule (:func:`sd_ddpm_scheduler`).
"""
from __future__ import annotations

import os
import tempfile
from typing import Dict

import torch

from .config import ModelConfig

__all__ = ["sd_ddpm_scheduler", "sd14_vae_config", "build_components", "build_video_unet"]


def sd_ddpm_scheduler():
    """SD 1.x's training noise schedule: DDPM, scaled_linear betas 0.00085..0.012, 1000 steps, epsilon."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
                         beta_schedule="scaled_linear", prediction_type="epsilon", clip_sample=False)


def sd14_vae_config() -> dict:
    """SD 1.4's ``AutoencoderKL`` config (84M parameters, factor 8, scaling 0.18215)."""
    return dict(in_channels=3, out_channels=3, latent_channels=4, layers_per_block=2, norm_num_groups=32,
                block_out_channels=(128, 256, 512, 512), down_block_types=("DownEncoderBlock2D",) * 4,
                up_block_types=("UpDecoderBlock2D",) * 4, sample_size=512, scaling_factor=0.18215)


def build_video_unet(cfg: ModelConfig, unet2d=None):
    """A :class:`tfaa.models.VideoUNet` for ``cfg`` (``unet2d``: the image UNet to inflate, else
    the SD1.4 config with random weights)."""
    from tfaa.models import VideoUNet
    from tfaa.testing import sd14_unet_config

    kwargs = dict(conv_num_layers=cfg.conv_num_layers, conv_kernel_size=cfg.conv_kernel_size,
                  tfaa_mode=cfg.tfaa_mode, backend=cfg.backend)
    if unet2d is not None:
        return VideoUNet.from_unet2d(unet2d, **kwargs)
    torch.manual_seed(cfg.seed)
    return VideoUNet(unet_config=sd14_unet_config(), **kwargs)


def build_components(cfg: ModelConfig) -> Dict[str, object]:
    """``dict(unet=VideoUNet, vae, text_encoder, tokenizer, noise_scheduler)`` on the CPU in fp32.

    The VAE and text encoder are in eval mode with ``requires_grad=False``; the UNet's spatial part
    is frozen (:meth:`VideoUNet.freeze_spatial`), its temporal blocks trainable, and its ResNets'
    GroupNorm+SiLU pairs are one op of ``cfg.backend`` (:meth:`VideoUNet.fuse_spatial_norm_act`:
    less activation memory under autocast; "torch" keeps diffusers' computation).
    """
    if cfg.source == "tiny":
        from tfaa.testing import tiny_sd_components

        comps = tiny_sd_components(seed=cfg.seed)
        unet = build_video_unet(cfg, comps["unet"])
        vae, text_encoder, tokenizer = comps["vae"], comps["text_encoder"], comps["tokenizer"]
    elif cfg.source == "pretrained":
        from diffusers import AutoencoderKL
        from transformers import CLIPTextModel, CLIPTokenizer

        from tfaa.models import VideoUNet

        path = cfg.pretrained_model_path
        for sub in ("vae", "text_encoder", "tokenizer"):
            if not os.path.isdir(os.path.join(path, sub)):
                raise FileNotFoundError(f"model.pretrained_model_path {path!r} has no {sub}/ folder "
                                        "(expected a diffusers SD 1.x pipeline folder)")
        unet = VideoUNet.from_sd(path, conv_num_layers=cfg.conv_num_layers, conv_kernel_size=cfg.conv_kernel_size,
                                 tfaa_mode=cfg.tfaa_mode, backend=cfg.backend)
        vae = AutoencoderKL.from_pretrained(path, subfolder="vae", local_files_only=True)
        text_encoder = CLIPTextModel.from_pretrained(path, subfolder="text_encoder", local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(path, subfolder="tokenizer", local_files_only=True)
    elif cfg.source == "sd14-random":
        from diffusers import AutoencoderKL
        from transformers import CLIPTextConfig, CLIPTextModel

        from tfaa.testing import tiny_tokenizer

        unet = build_video_unet(cfg)
        torch.manual_seed(cfg.seed + 1)
        vae = AutoencoderKL(**sd14_vae_config())
        with tempfile.TemporaryDirectory() as d:
            tokenizer = tiny_tokenizer(d)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=len(tokenizer), hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
            num_attention_heads=12, max_position_embeddings=77, bos_token_id=tokenizer.bos_token_id,
            eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id))
    else:
        raise ValueError(f"model.source must be 'tiny', 'pretrained' or 'sd14-random', got {cfg.source!r}")
    unet.freeze_spatial().fuse_spatial_norm_act()
    for m in (vae, text_encoder):
        m.requires_grad_(False)
        m.eval()
    return dict(unet=unet, vae=vae, text_encoder=text_encoder, tokenizer=tokenizer,
                noise_scheduler=sd_ddpm_scheduler())
