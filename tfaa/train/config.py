"""The typed training configuration, loaded from YAML and checked before any model work.

Sections (all keys optional except the data source)::

    output_dir: runs/ucf            # checkpoints/, logs/ (TensorBoard), final/, results.json
    seed: 0
    model:  {source, pretrained_model_path, conv_num_layers, conv_kernel_size, tfaa_mode, backend,
             gradient_checkpointing, seed}
    data:   {format, captions, root, ucf101_root, ucf101_split_file, msrvtt_annotation, msrvtt_video_dir,
             msrvtt_split, synthetic_num_videos, num_frames, target_fps, size, stride, random_start,
             caption_dropout, frames_fps, num_workers, latent_cache_dir}
    optim:  {learning_rate, adam_beta1, adam_beta2, adam_epsilon, weight_decay, lr_scheduler,
             lr_warmup_steps, max_grad_norm}
    train:  {batch_size, gradient_accumulation_steps, max_steps, mixed_precision, ema_decay,
             log_every, checkpoint_every, keep_last, tensorboard, progress, resume, deterministic,
             cuda_graph, ddp_comm_hook, ddp_bucket_cap_mb}

Unknown keys raise :class:`ConfigError` naming the key and the closest valid one; wrong types and
out-of-range values raise it naming the key and the rule. Defaults follow the thesis (8 frames at
24 fps, 256 px, SD1.4, temporal TFAA, 4-layer K=3 temporal convs).
"""
from __future__ import annotations

import dataclasses
import difflib
import os
import typing
from dataclasses import dataclass, field
from typing import Any, Dict, Optional

__all__ = ["ConfigError", "ModelConfig", "DataConfig", "OptimConfig", "RunConfig", "TrainConfig",
           "load_config", "config_from_dict", "config_to_dict"]


class ConfigError(ValueError):
    """An invalid training configuration (unknown key, wrong type, out-of-range value)."""


@dataclass
class ModelConfig:
    #: "tiny" (random tiny SD1.x, tests/demo), "pretrained" (local SD1.x diffusers dir),
    #: "sd14-random" (SD1.4-size components with random weights, benchmarks)
    source: str = "pretrained"
    pretrained_model_path: Optional[str] = None
    conv_num_layers: int = 4
    conv_kernel_size: int = 3
    tfaa_mode: str = "temporal"
    backend: str = "auto"
    gradient_checkpointing: bool = False
    seed: int = 0  # weights seed of the random sources


@dataclass
class DataConfig:
    #: "captions" (CSV/JSONL file), "ucf101", "msrvtt", "synthetic" (generated into output_dir/synthetic_data)
    format: str = "captions"
    captions: Optional[str] = None
    root: Optional[str] = None
    ucf101_root: Optional[str] = None
    ucf101_split_file: Optional[str] = None
    msrvtt_annotation: Optional[str] = None
    msrvtt_video_dir: Optional[str] = None
    msrvtt_split: Optional[str] = None
    synthetic_num_videos: int = 16
    num_frames: int = 8
    target_fps: Optional[float] = 24.0
    size: int = 256
    stride: int = 1
    random_start: bool = False
    caption_dropout: float = 0.1
    frames_fps: float = 24.0
    num_workers: int = 0
    latent_cache_dir: Optional[str] = None


@dataclass
class OptimConfig:
    learning_rate: float = 1e-4
    adam_beta1: float = 0.9
    adam_beta2: float = 0.999
    adam_epsilon: float = 1e-8
    weight_decay: float = 1e-2
    #: "constant", "constant_with_warmup", "linear", "cosine" (diffusers.optimization names)
    lr_scheduler: str = "constant_with_warmup"
    lr_warmup_steps: int = 0
    max_grad_norm: Optional[float] = 1.0


@dataclass
class RunConfig:
    batch_size: int = 1  # videos per process per micro-step
    gradient_accumulation_steps: int = 1
    max_steps: int = 1000  # optimizer steps
    #: "auto" (bf16 autocast on CUDA, fp32 elsewhere), "bf16", "no"
    mixed_precision: str = "auto"
    ema_decay: Optional[float] = None
    log_every: int = 10
    checkpoint_every: int = 500
    keep_last: int = 3
    tensorboard: bool = True
    progress: bool = True
    #: None, "latest" (newest complete checkpoint in output_dir, or a fresh start when none), or a path
    resume: Optional[str] = None
    #: torch.use_deterministic_algorithms(True) for the run (strict: an op with no deterministic
    #: implementation raises) and the fused kernels' deterministic paths: bitwise repeatable losses
    #: on the GPU, e.g. to check a resume against an uninterrupted run; slower
    deterministic: bool = False
    #: replay each micro-batch's forward and backward from one CUDA graph (tfaa.train.step.GradientStep):
    #: the host's Python and launch time is paid once, at the capture in the first step (after 3
    #: eager warm-up calls). null (default): on for one CUDA process without
    #: model.gradient_checkpointing, and a failed capture falls back to eager steps with a warning;
    #: true: required (one CUDA process, no gradient checkpointing; a failed capture raises); false: eager
    cuda_graph: Optional[bool] = None
    #: DDP gradient all-reduce (2+ processes): "no" (fp32 buckets), "bf16" or "fp16" (the buckets
    #: are compressed for the all-reduce and decompressed after: half the bytes, rounded gradients)
    ddp_comm_hook: str = "no"
    ddp_bucket_cap_mb: int = 25


@dataclass
class TrainConfig:
    output_dir: str = "runs/tfaa"
    seed: int = 0
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: RunConfig = field(default_factory=RunConfig)

    def validate(self) -> "TrainConfig":
        """Check ranges and cross-field rules; raises :class:`ConfigError` naming the key."""
        m, d, o, t = self.model, self.data, self.optim, self.train
        _choice("model.source", m.source, ("tiny", "pretrained", "sd14-random"))
        if m.source == "pretrained":
            if not m.pretrained_model_path:
                raise ConfigError("model.pretrained_model_path is required when model.source is 'pretrained'")
            if not os.path.exists(m.pretrained_model_path):
                raise ConfigError(f"model.pretrained_model_path {m.pretrained_model_path!r} does not exist")
        _range("model.conv_num_layers", m.conv_num_layers, lo=1)
        if m.conv_kernel_size not in (1, 3, 5):
            raise ConfigError(f"model.conv_kernel_size must be 1, 3 or 5, got {m.conv_kernel_size}")
        _choice("model.tfaa_mode", m.tfaa_mode, ("temporal", "spatial"))
        _choice("model.backend", m.backend, ("auto", "torch", "triton", "cuda"))
        _choice("data.format", d.format, ("captions", "ucf101", "msrvtt", "synthetic"))
        need = {"captions": ["captions"], "ucf101": ["ucf101_root"],
                "msrvtt": ["msrvtt_annotation", "msrvtt_video_dir"], "synthetic": []}[d.format]
        for key in need:
            value = getattr(d, key)
            if not value:
                raise ConfigError(f"data.{key} is required when data.format is {d.format!r}")
            if not os.path.exists(value):
                raise ConfigError(f"data.{key} {value!r} does not exist")
        _range("data.synthetic_num_videos", d.synthetic_num_videos, lo=1)
        # F = 1 skips every temporal block (image mode): nothing would train
        _range("data.num_frames", d.num_frames, lo=2, hi=1024)
        if d.target_fps is not None:
            _range("data.target_fps", d.target_fps, lo=1e-3, lo_open=True)
        _range("data.size", d.size, lo=8)
        if d.size % 8:
            raise ConfigError(f"data.size must be a multiple of 8 (the VAE downsamples by 8), got {d.size}")
        _range("data.stride", d.stride, lo=1)
        _range("data.caption_dropout", d.caption_dropout, lo=0.0, hi=1.0)
        _range("data.frames_fps", d.frames_fps, lo=1e-3)
        _range("data.num_workers", d.num_workers, lo=0)
        _range("optim.learning_rate", o.learning_rate, lo=0.0, hi=1.0, lo_open=True)
        _range("optim.adam_beta1", o.adam_beta1, lo=0.0, hi=1.0, hi_open=True)
        _range("optim.adam_beta2", o.adam_beta2, lo=0.0, hi=1.0, hi_open=True)
        _range("optim.adam_epsilon", o.adam_epsilon, lo=0.0, lo_open=True)
        _range("optim.weight_decay", o.weight_decay, lo=0.0)
        _choice("optim.lr_scheduler", o.lr_scheduler, ("constant", "constant_with_warmup", "linear", "cosine"))
        _range("optim.lr_warmup_steps", o.lr_warmup_steps, lo=0)
        if o.max_grad_norm is not None:
            _range("optim.max_grad_norm", o.max_grad_norm, lo=0.0, lo_open=True)
        _range("train.batch_size", t.batch_size, lo=1)
        _range("train.gradient_accumulation_steps", t.gradient_accumulation_steps, lo=1)
        _range("train.max_steps", t.max_steps, lo=1)
        _choice("train.mixed_precision", t.mixed_precision, ("auto", "bf16", "no"))
        if t.ema_decay is not None:
            _range("train.ema_decay", t.ema_decay, lo=0.0, hi=1.0, lo_open=True, hi_open=True)
        _range("train.log_every", t.log_every, lo=1)
        _range("train.checkpoint_every", t.checkpoint_every, lo=1)
        _range("train.keep_last", t.keep_last, lo=1)
        _choice("train.ddp_comm_hook", t.ddp_comm_hook, ("no", "bf16", "fp16"))
        _range("train.ddp_bucket_cap_mb", t.ddp_bucket_cap_mb, lo=1)
        if t.cuda_graph is True and m.gradient_checkpointing:
            raise ConfigError("train.cuda_graph cannot be combined with model.gradient_checkpointing "
                              "(the recomputation saves and restores RNG states, which a capture forbids); "
                              "set one of them to false")
        if t.resume not in (None, "latest") and not os.path.isdir(t.resume):
            raise ConfigError(f"train.resume must be null, 'latest' or an existing checkpoint folder, got {t.resume!r}")
        return self


def _choice(name: str, value: Any, choices) -> None:
    if value not in choices:
        close = difflib.get_close_matches(str(value), [str(c) for c in choices], n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise ConfigError(f"{name} must be one of {list(choices)}, got {value!r}{hint}")


def _range(name: str, value, lo=None, hi=None, lo_open=False, hi_open=False) -> None:
    bad = (lo is not None and (value < lo or (lo_open and value == lo))) or \
          (hi is not None and (value > hi or (hi_open and value == hi)))
    if bad:
        lo_s = "" if lo is None else f"{'>' if lo_open else '>='} {lo}"
        hi_s = "" if hi is None else f"{'<' if hi_open else '<='} {hi}"
        raise ConfigError(f"{name} must be {' and '.join(s for s in (lo_s, hi_s) if s)}, got {value!r}")


def _check_type(name: str, tp, value):
    origin = typing.get_origin(tp)
    if origin is typing.Union:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        if value is None:
            return None
        return _check_type(name, args[0], value)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{name} must be true or false, got {value!r}")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{name} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            if isinstance(value, str):  # YAML reads "1e-4" as a string
                try:
                    return float(value)
                except ValueError:
                    pass
            raise ConfigError(f"{name} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{name} must be a string, got {value!r}")
        return value
    raise TypeError(f"unsupported config type {tp} for {name}")


def _build(cls, data: Dict[str, Any], prefix: str):
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    kwargs = {}
    for key, value in data.items():
        name = f"{prefix}{key}"
        if key not in fields:
            all_keys = list(fields)
            close = difflib.get_close_matches(str(key), all_keys, n=1, cutoff=0.5)
            hint = f"; did you mean {prefix + close[0]!r}?" if close else ""
            raise ConfigError(f"unknown config key {name!r}{hint} (valid keys in "
                              f"{prefix.rstrip('.') or 'the top level'}: {', '.join(all_keys)})")
        tp = hints[key]
        if dataclasses.is_dataclass(tp):
            kwargs[key] = _build(tp, value if value is not None else {}, f"{name}.")
        else:
            kwargs[key] = _check_type(name, tp, value)
    return cls(**kwargs)


def config_from_dict(data: Dict[str, Any], validate: bool = True) -> TrainConfig:
    """Build (and by default validate) a :class:`TrainConfig` from a nested dict."""
    cfg = _build(TrainConfig, data or {}, "")
    return cfg.validate() if validate else cfg


def load_config(path: str, overrides: Optional[Dict[str, Any]] = None, validate: bool = True) -> TrainConfig:
    """Read a YAML file into a validated :class:`TrainConfig`. ``overrides``: dotted keys
    (``{"train.max_steps": 10}``) applied before validation."""
    import yaml

    if not os.path.isfile(path):
        raise ConfigError(f"config file {path!r} does not exist")
    with open(path, encoding="utf-8") as fh:
        try:
            data = yaml.safe_load(fh) or {}
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path}: not valid YAML ({exc})") from exc
    for dotted, value in (overrides or {}).items():
        node = data
        *parents, last = dotted.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[last] = value
    return config_from_dict(data, validate=validate)


def config_to_dict(cfg: TrainConfig) -> Dict[str, Any]:
    """The config as a plain nested dict (YAML/JSON serialisable)."""
    return dataclasses.asdict(cfg)
