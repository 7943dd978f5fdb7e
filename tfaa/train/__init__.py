"""Temporal-only training of the video UNet (thesis ch. 3.2, 4.3).

- :func:`train` (``tfaa train --config cfg.yaml``): the accelerate training loop, 1..N processes;
- :class:`TrainConfig`, :func:`load_config`, :class:`ConfigError`: the typed, checked YAML config;
- :class:`CheckpointManager`, :func:`find_latest_checkpoint`: atomic rotating checkpoints;
- :func:`build_components`, :func:`sd_ddpm_scheduler`: model sources (pretrained / tiny / sd14-random);
- :func:`diffusion_loss`: eq. 3.9; :class:`EMA`; :class:`ResumableBatchSampler`.
"""
from .checkpoint import CheckpointManager, find_latest_checkpoint, list_checkpoints, resolve_resume
from .components import build_components, build_video_unet, sd_ddpm_scheduler
from .config import (ConfigError, DataConfig, ModelConfig, OptimConfig, RunConfig, TrainConfig, config_from_dict,
                     config_to_dict, load_config)
from .ema import EMA
from .loss import diffusion_loss, encode_text
from .sampler import ResumableBatchSampler
from .trainer import train

__all__ = ["train", "TrainConfig", "ModelConfig", "DataConfig", "OptimConfig", "RunConfig", "ConfigError",
           "load_config", "config_from_dict", "config_to_dict", "CheckpointManager", "find_latest_checkpoint",
           "list_checkpoints", "resolve_resume", "build_components", "build_video_unet", "sd_ddpm_scheduler",
           "diffusion_loss", "encode_text", "EMA", "ResumableBatchSampler"]
