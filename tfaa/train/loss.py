"""The training objective (thesis eq. 3.9) and the frozen encoders it uses."""
from __future__ import annotations

from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F

__all__ = ["encode_text", "diffusion_loss"]


@torch.no_grad()
def encode_text(tokenizer, text_encoder, captions: List[str], device) -> torch.Tensor:
    """``B`` captions -> ``(B, 77, C_text)`` CLIP last hidden states (padded/truncated to the tokenizer's length)."""
    ids = tokenizer(list(captions), padding="max_length", max_length=tokenizer.model_max_length,
                    truncation=True, return_tensors="pt").input_ids.to(device)
    return text_encoder(ids)[0]


def diffusion_loss(unet, latents: torch.Tensor, text_emb: torch.Tensor, noise_scheduler,
                   generator: torch.Generator, timestep_range: Optional[Tuple[int, int]] = None) -> torch.Tensor:
    """Eq. 3.9: ``|| eps - eps_{theta,phi}(z_t; c, t) ||^2`` averaged over all elements.

    Args:
        unet: a :class:`tfaa.models.VideoUNet` (or its DDP wrapper).
        latents: ``(B, F, 4, h, w)`` clean latents ``z_0`` (VAE-scaled), float32.
        text_emb: ``(B, 77, C)`` text embeddings (repeated per frame inside the UNet).
        noise_scheduler: a diffusers ``DDPMScheduler`` (``add_noise``; ``epsilon`` or ``v_prediction``).
        generator: draws one timestep per video (shared by its frames) and the noise ``eps``.
        timestep_range: ``(lo, hi)``: draw the timesteps uniformly from ``lo <= t < hi`` instead of
            the whole schedule ``[0, num_train_timesteps)`` (e.g. to train temporal modules only at
            the noise levels where the frames' layout is still open).
    Returns the scalar MSE in float32.
    """
    total = noise_scheduler.config.num_train_timesteps
    lo, hi = (0, total) if timestep_range is None else (int(timestep_range[0]), int(timestep_range[1]))
    if not 0 <= lo < hi <= total:
        raise ValueError(f"timestep_range must satisfy 0 <= lo < hi <= num_train_timesteps ({total}), "
                         f"got {timestep_range}")
    b, f = latents.shape[:2]
    # contiguous NCHW: strided views (e.g. the VAE posterior mean) can make TensorIterator pick a
    # channels-last result, and torch's CPU GroupNorm channels-last backward crashes (torch 2.13)
    z0 = latents.flatten(0, 1).float().contiguous()
    noise = torch.randn(z0.shape, generator=generator, device=z0.device, dtype=z0.dtype)
    t = torch.randint(lo, hi, (b,), generator=generator, device=z0.device)
    t_frames = t.repeat_interleave(f)
    zt = noise_scheduler.add_noise(z0, noise, t_frames)
    pred = unet(zt, t_frames, text_emb, num_frames=f, return_dict=False)[0]
    ptype = noise_scheduler.config.prediction_type
    if ptype == "epsilon":
        target = noise
    elif ptype == "v_prediction":
        target = noise_scheduler.get_velocity(z0, noise, t_frames)
    else:
        raise ValueError(f"unsupported prediction_type {ptype!r} (epsilon or v_prediction)")
    return F.mse_loss(pred.float(), target.float())
