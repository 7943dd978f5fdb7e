"""Sampling videos from a demo video model: DDIM with classifier-free guidance on packed pixels.

The demo works in pixel space (no VAE), so it runs its own short denoising loop rather than
:class:`tfaa.pipeline.TFAAPipeline` (which decodes latents with a VAE); the loop is the pipeline's:
frames denoised jointly as ``B*F`` rows, the unconditional and conditional halves in one UNet call.
"""
from __future__ import annotations

from typing import List, Sequence

import numpy as np
import torch
from tqdm.auto import tqdm

from tfaa.train.loss import encode_text

from .models import PACK, sampling_scheduler, unpack_pixels

__all__ = ["initial_noise", "sample_videos"]


def initial_noise(num_videos: int, num_frames: int, size: int, seeds: Sequence[int]) -> torch.Tensor:
    """``(num_videos, F, 12, size/2, size/2)`` CPU noise, video ``i`` from ``seeds[i]`` (the same for every model)."""
    shape = (num_frames, 3 * PACK * PACK, size // PACK, size // PACK)
    return torch.stack([torch.randn(shape, generator=torch.Generator("cpu").manual_seed(int(s))) for s in seeds])


@torch.no_grad()
def sample_videos(video_unet, text_encoder, tokenizer, prompts: List[str], noise: torch.Tensor,
                  num_inference_steps: int, guidance_scale: float, device: torch.device,
                  desc: str = "sampling", progress: bool = True) -> np.ndarray:
    """Denoise ``noise`` (``(B, F, 12, h, w)``, one row per prompt) into ``(B, F, H, W, 3)`` uint8 videos."""
    b, f = noise.shape[:2]
    if len(prompts) != b:
        raise ValueError(f"got {len(prompts)} prompts for {b} noise videos; give one prompt per video")
    sched = sampling_scheduler()
    sched.set_timesteps(num_inference_steps, device=device)
    cond = encode_text(tokenizer, text_encoder, prompts, device)
    do_cfg = guidance_scale > 1.0
    if do_cfg:
        cond = torch.cat([encode_text(tokenizer, text_encoder, [""] * b, device), cond])
    emb = cond.repeat_interleave(f, dim=0)
    latents = noise.to(device).flatten(0, 1) * sched.init_noise_sigma
    for t in tqdm(sched.timesteps, desc=desc, disable=not progress):
        model_in = torch.cat([latents] * 2) if do_cfg else latents
        pred = video_unet(sched.scale_model_input(model_in, t), t, emb, num_frames=f, return_dict=False)[0]
        if do_cfg:
            uncond, c = pred.chunk(2)
            pred = uncond + guidance_scale * (c - uncond)
        latents = sched.step(pred, t, latents, return_dict=False)[0]
    pixels = unpack_pixels(latents).clamp(-1, 1).add(1).mul(127.5).round().to(torch.uint8)
    return pixels.reshape(b, f, *pixels.shape[1:]).permute(0, 1, 3, 4, 2).cpu().numpy()
