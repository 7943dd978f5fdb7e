"""The demo's two training stages.

1. :func:`train_image_model`: the tiny UNet and text encoder learn single frames with their captions
   (the stand-in for pretraining Stable Diffusion on images).
2. :func:`train_video_model`: the image UNet is inflated into a :class:`tfaa.models.VideoUNet`
   and only its temporal blocks are trained on whole clips, image weights and text encoder frozen
   (the thesis' recipe, eq. 3.9 via :func:`tfaa.train.loss.diffusion_loss`).
"""
from __future__ import annotations

from typing import List, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from tfaa.models import VideoUNet
from tfaa.train.loss import diffusion_loss, encode_text

from .config import VARIANTS, DemoConfig
from .data import ClipSet
from .models import build_text_encoder, build_tokenizer, build_unet, noise_scheduler, pack_pixels

__all__ = ["clips_to_latents", "train_image_model", "train_video_model"]


def clips_to_latents(frames: np.ndarray) -> torch.Tensor:
    """``(N, F, H, W, 3)`` uint8 -> packed pixels ``(N, F, 12, H/2, W/2)`` in [-1, 1]."""
    n, f = frames.shape[:2]
    x = torch.from_numpy(frames).float().div(127.5).sub(1.0).permute(0, 1, 4, 2, 3).flatten(0, 1)
    x = pack_pixels(x)
    return x.reshape(n, f, *x.shape[1:]).contiguous()


def _optimizer(params, lr: float, steps: int):
    from diffusers.optimization import get_cosine_schedule_with_warmup

    opt = torch.optim.AdamW(params, lr=lr, weight_decay=0.0)
    warmup = min(50, max(steps // 10, 1))
    return opt, get_cosine_schedule_with_warmup(opt, warmup, max(steps, warmup + 1))


def _with_dropout(captions: List[str], p: float, rng: np.random.Generator) -> List[str]:
    """Replace each caption by ``""`` with probability ``p`` (classifier-free guidance training)."""
    return ["" if rng.random() < p else c for c in captions]


def train_image_model(cfg: DemoConfig, clips: ClipSet, device: torch.device, tokenizer_dir: str,
                      progress: bool = True) -> Tuple[object, object, object, List[float]]:
    """Train the image UNet (and the text encoder when ``cfg.train_text_encoder``) on single frames.

    Returns ``(unet, text_encoder, tokenizer, losses)`` (models in eval mode on ``device``).
    """
    tokenizer = build_tokenizer(tokenizer_dir)
    text_encoder = build_text_encoder(tokenizer, cfg.seed + 1).to(device)
    text_encoder.train(cfg.train_text_encoder).requires_grad_(cfg.train_text_encoder)
    unet = build_unet(cfg, cfg.seed).to(device).train()
    params = list(unet.parameters()) + (list(text_encoder.parameters()) if cfg.train_text_encoder else [])
    images = clips_to_latents(clips.frames).flatten(0, 1).to(device)  # (N*F, 12, h, w)
    captions = [c for c in clips.captions for _ in range(cfg.num_frames)]
    sched = noise_scheduler()
    opt, lr_sched = _optimizer(params, cfg.lr_image, cfg.steps_image)
    rng = np.random.default_rng(cfg.seed)
    gen = torch.Generator(device="cpu").manual_seed(cfg.seed)
    losses = []
    for _ in tqdm(range(cfg.steps_image), desc="image model", disable=not progress):
        idx = rng.integers(0, images.shape[0], cfg.batch_image)
        x0 = images[idx]
        emb = _encode(tokenizer, text_encoder, _with_dropout([captions[i] for i in idx], cfg.caption_dropout, rng),
                      device)
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(0, sched.config.num_train_timesteps, (x0.shape[0],), generator=gen).to(device)
        pred = unet(sched.add_noise(x0, noise, t), t, emb).sample
        loss = F.mse_loss(pred, sched.get_velocity(x0, noise, t))
        losses.append(_optimizer_step(loss, params, opt, lr_sched))
    return unet.eval(), text_encoder.eval(), tokenizer, losses


def _optimizer_step(loss: torch.Tensor, params, opt, lr_sched) -> float:
    """Backward, clip the gradient norm at 1, step optimizer and LR schedule; returns the loss."""
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()
    lr_sched.step()
    return loss.item()


def _encode(tokenizer, text_encoder, captions: List[str], device) -> torch.Tensor:
    """Text embeddings with gradients (``encode_text`` of tfaa.train is no-grad)."""
    ids = tokenizer(captions, padding="max_length", max_length=tokenizer.model_max_length, truncation=True,
                    return_tensors="pt").input_ids.to(device)
    return text_encoder(ids)[0]


def build_video_model(unet2d, cfg: DemoConfig, variant: str) -> VideoUNet:
    """Inflate ``unet2d`` with the temporal blocks of ``variant`` (a key of :data:`VARIANTS`)."""
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {tuple(VARIANTS)}, got {variant!r}")
    return VideoUNet.from_unet2d(unet2d, conv_num_layers=cfg.conv_num_layers, tfaa_mode=cfg.tfaa_mode, backend="auto",
                                 **VARIANTS[variant])


def train_video_model(unet2d, text_encoder, tokenizer, cfg: DemoConfig, clips: ClipSet, variant: str,
                      device: torch.device, progress: bool = True) -> Tuple[VideoUNet, List[float]]:
    """Inflate ``unet2d`` (``variant``'s temporal blocks) and train the temporal blocks on whole clips
    with the image weights frozen, at timesteps ``>= cfg.video_min_timestep``. Every variant sees the
    same batches, noise and timesteps.
    Returns ``(video_unet in eval mode, losses)``."""
    torch.manual_seed(cfg.seed + 2)
    video = build_video_model(unet2d, cfg, variant).to(device).freeze_spatial().train()
    latents = clips_to_latents(clips.frames).to(device)
    text_encoder.requires_grad_(False)
    cond = encode_text(tokenizer, text_encoder, clips.captions, device)
    uncond = encode_text(tokenizer, text_encoder, [""], device)
    sched = noise_scheduler()
    params = list(video.temporal_parameters())
    opt, lr_sched = _optimizer(params, cfg.lr_video, cfg.steps_video)
    rng = np.random.default_rng(cfg.seed + 3)
    gen = torch.Generator(device=device).manual_seed(cfg.seed + 3)
    losses = []
    for _ in tqdm(range(cfg.steps_video), desc=f"video model ({variant})", disable=not progress):
        idx = rng.integers(0, latents.shape[0], cfg.batch_video)
        drop = torch.from_numpy(rng.random(len(idx)) < cfg.caption_dropout).to(device)
        emb = torch.where(drop[:, None, None], uncond.expand(len(idx), -1, -1), cond[idx])
        loss = diffusion_loss(video, latents[idx], emb, sched, gen,
                              timestep_range=(cfg.video_min_timestep, sched.config.num_train_timesteps))
        losses.append(_optimizer_step(loss, params, opt, lr_sched))
    return video.eval(), losses
