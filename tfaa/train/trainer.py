"""The training loop: temporal-only training of the video UNet with accelerate (1..N processes).

:func:`train` is the Python API behind ``tfaa train --config cfg.yaml``. What it does, in order:

1. validate the config and list the dataset's videos (errors here cost no model work);
2. build the frozen VAE / text encoder / spatial UNet and the trainable temporal blocks
   (:mod:`.components`), AdamW on the temporal parameters only, a diffusers LR schedule with warmup;
3. optionally cache latents (rank 0 encodes, the others wait), then train from them;
4. per optimizer step: ``gradient_accumulation_steps`` micro-batches (DDP gradient sync only on the
   last), eq. 3.9 loss under bf16 autocast (``mixed_precision``) and its backward
   (:class:`.step.GradientStep`: replayed from one CUDA graph on one CUDA process, ``train.cuda_graph``; else eager),
   gradient clipping, optimizer and LR-schedule step, EMA update; loss averaged across processes;
   TensorBoard + tqdm on rank 0;
5. atomic checkpoints every ``checkpoint_every`` steps and at the end; ``final/temporal`` (and
   ``final/ema_temporal``) written at the end; ``results.json`` on rank 0.

Exact resume: a checkpoint holds the temporal weights, AdamW state, LR-schedule state, EMA, the data
position (epoch, batch) and every RNG (python, numpy, torch CPU + CUDA, the loss' noise generator),
per rank. Samples depend only on ``(seed, epoch, index)``, the data order only on ``(seed, epoch)``,
so a resumed run continues bitwise like the uninterrupted one (fp32, CPU; tested).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import math
import os
import random
import time
from typing import Any, Dict, Optional, Union

import numpy as np
import torch

from tfaa.data import LatentDataset, SkipCounter, cache_latents, encode_pixels

from .checkpoint import CheckpointManager, load_rank_state, load_training_state, resolve_resume
from .components import build_components
from .config import TrainConfig, config_from_dict, config_to_dict, load_config
from .data_setup import DataPosition, batch_stream, build_video_dataset, load_records
from .ema import EMA
from .loss import encode_text
from .step import GradientStep

__all__ = ["train", "resolve_mixed_precision", "resolve_cuda_graph", "capture_rng_state", "restore_rng_state",
           "param_checksum"]

logger = logging.getLogger(__name__)


def resolve_mixed_precision(setting: str, cuda: bool) -> str:
    """``"auto"`` -> ``"bf16"`` on CUDA, ``"no"`` elsewhere; other values unchanged."""
    if setting == "auto":
        return "bf16" if cuda else "no"
    return setting


def resolve_cuda_graph(setting: Optional[bool], cuda: bool, world_size: int, gradient_checkpointing: bool) -> bool:
    """``train.cuda_graph``: None (auto) -> on for one CUDA process without gradient checkpointing;
    True / False unchanged (True is checked against the run later, with a clear error)."""
    if setting is None:
        return cuda and world_size == 1 and not gradient_checkpointing
    return bool(setting)


def capture_rng_state(noise_generator: torch.Generator) -> dict:
    """Every RNG this process draws from (python, numpy, torch CPU, CUDA, the noise generator)."""
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "noise_generator": noise_generator.get_state()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng_state(state: dict, noise_generator: torch.Generator) -> None:
    """Inverse of :func:`capture_rng_state`."""
    random.setstate(state["python"])
    np.random.set_state(state["numpy"])
    torch.set_rng_state(state["torch"])
    noise_generator.set_state(state["noise_generator"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


def param_checksum(params) -> str:
    """SHA-256 of the parameters' bytes (fp32), to compare weights across processes."""
    h = hashlib.sha256()
    for p in params:
        h.update(p.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _as_config(config: Union[TrainConfig, Dict[str, Any], str]) -> TrainConfig:
    if isinstance(config, TrainConfig):
        return config.validate()
    if isinstance(config, dict):
        return config_from_dict(config)
    if isinstance(config, (str, os.PathLike)):
        return load_config(os.fspath(config))
    raise TypeError(f"config must be a TrainConfig, a dict or a YAML path, got {type(config).__name__}")


def train(config: Union[TrainConfig, Dict[str, Any], str], stop_at_step: Optional[int] = None) -> Dict[str, Any]:
    """Train the temporal modules; returns a results dict (also written to ``output_dir/results.json``).

    Args:
        config: a :class:`TrainConfig`, a nested dict, or a YAML path.
        stop_at_step: end the run after this optimizer step as if interrupted (no final export;
            checkpoints written so far stay) — for tests and for time-boxed jobs.

    Results: ``losses`` (per optimizer step run in this call, averaged over processes), ``steps``,
    ``local_losses`` (this process), ``final_step``, ``last_checkpoint``, ``skipped_videos`` (distinct
    unreadable/too-short videos, all processes), ``skip_events``, ``param_checksum`` (this process),
    ``rank_checksums`` (all processes), ``world_size``, ``trainable_parameters``, ``total_parameters``,
    ``mixed_precision``, ``cuda_graph`` (whether the steps ran as graph replays), ``frames_per_second``
    (all frames over the loop's wall time, compilation, autotuning and capture of the first steps
    included), ``step_seconds`` (rank 0's wall time per optimizer step; every step ends in a host
    sync on the loss), ``frames_per_second_median_step`` (frames per step,
    all processes, over the median step time: the steady-state throughput), ``peak_memory_bytes``
    (``torch.cuda.max_memory_allocated`` per process, rank order; ``None`` without CUDA),
    ``output_dir``, ``resumed_from``.
    """
    cfg = _as_config(config)
    if not cfg.train.deterministic:
        return _train(cfg, stop_at_step)
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled())
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS (read at its first use)
    torch.use_deterministic_algorithms(True)  # strict: e.g. SDPA's flash backward takes its deterministic path
    try:
        return _train(cfg, stop_at_step)
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])


def _train(cfg: TrainConfig, stop_at_step: Optional[int]) -> Dict[str, Any]:
    from accelerate import Accelerator
    from accelerate.utils import AutocastKwargs, DDPCommunicationHookType, DistributedDataParallelKwargs
    from diffusers.optimization import get_scheduler
    from tqdm.auto import tqdm

    d, t, o = cfg.data, cfg.train, cfg.optim
    mixed = resolve_mixed_precision(t.mixed_precision, torch.cuda.is_available())
    # gradient_as_bucket_view: the gradients live in DDP's buckets (no copy in and out per step)
    ddp = DistributedDataParallelKwargs(gradient_as_bucket_view=True, bucket_cap_mb=t.ddp_bucket_cap_mb,
                                        comm_hook=DDPCommunicationHookType(t.ddp_comm_hook))
    # cpu=True without CUDA: under a multi-process launcher (torchrun / accelerate launch --multi_gpu)
    # accelerate then sets up DDP over gloo (MULTI_CPU) instead of silently running N copies of rank 0
    use_graph = resolve_cuda_graph(t.cuda_graph, torch.cuda.is_available(), int(os.environ.get("WORLD_SIZE", "1")),
                                   cfg.model.gradient_checkpointing)
    # a captured step must recompute its bf16 weight casts on every replay: autocast's cast cache off
    amp = AutocastKwargs(cache_enabled=False if use_graph else None)
    accelerator = Accelerator(mixed_precision=mixed, step_scheduler_with_optimizer=False,
                              cpu=not torch.cuda.is_available(), kwargs_handlers=[ddp, amp])
    rank, world, device = accelerator.process_index, accelerator.num_processes, accelerator.device
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != world:
        raise RuntimeError(f"launched as {launched} processes (WORLD_SIZE) but accelerate set up {world}; "
                           "check the accelerate launch options")
    if t.ddp_comm_hook == "bf16" and world > 1 and device.type != "cuda":
        raise ValueError("train.ddp_comm_hook 'bf16' needs CUDA (torch's bf16 hook runs on NCCL); "
                         "use 'fp16' or 'no' here")
    if use_graph and device.type != "cuda":
        raise ValueError("train.cuda_graph needs a CUDA GPU (this process runs on the CPU); set it to false")
    if use_graph and world > 1:
        raise ValueError(f"train.cuda_graph supports one process, got {world}; set it to false for DDP runs")
    is_main = accelerator.is_main_process
    ckpt_root = os.path.join(cfg.output_dir, "checkpoints")
    resume_from = resolve_resume(t.resume, ckpt_root)

    # ---- data first: a bad data source fails before any model is built
    if is_main:
        os.makedirs(cfg.output_dir, exist_ok=True)
        records = load_records(d, cfg.output_dir, is_main=True)
    accelerator.wait_for_everyone()
    if not is_main:
        records = load_records(d, cfg.output_dir, is_main=False)
    video_dataset = build_video_dataset(d, records, seed=cfg.seed)

    # ---- models (same seed on every rank: identical initial temporal weights)
    random.seed(cfg.seed)
    np.random.seed(cfg.seed)
    torch.manual_seed(cfg.seed)
    comps = build_components(cfg.model)
    unet, vae, text_encoder, tokenizer, noise_scheduler = (
        comps["unet"], comps["vae"], comps["text_encoder"], comps["tokenizer"], comps["noise_scheduler"])
    frozen_dtype = torch.bfloat16 if (mixed == "bf16" and device.type == "cuda") else torch.float32
    for frozen in (vae, text_encoder):
        frozen.to(device) if frozen_dtype == torch.float32 else frozen.to(device, frozen_dtype)
    unet.to(device)
    if cfg.model.gradient_checkpointing:
        unet.enable_gradient_checkpointing()
    unet.train()
    params = [p for p in unet.temporal_parameters() if p.requires_grad]
    n_train = sum(p.numel() for p in params)
    n_total = sum(p.numel() for m in (unet, vae, text_encoder) for p in m.parameters())

    # ---- latents: cached or encoded on the fly
    if d.latent_cache_dir:
        if is_main and not os.path.isfile(os.path.join(d.latent_cache_dir, "meta.json")):
            cache_latents(video_dataset, vae, d.latent_cache_dir, progress=t.progress)
        accelerator.wait_for_everyone()
        dataset = LatentDataset(d.latent_cache_dir, caption_dropout=d.caption_dropout, seed=cfg.seed,
                                num_frames=d.num_frames, size=d.size)
    else:
        dataset = video_dataset

    optimizer = torch.optim.AdamW(params, lr=o.learning_rate, betas=(o.adam_beta1, o.adam_beta2),
                                  eps=o.adam_epsilon, weight_decay=o.weight_decay)
    lr_scheduler = get_scheduler(o.lr_scheduler, optimizer, num_warmup_steps=o.lr_warmup_steps,
                                 num_training_steps=t.max_steps)
    ema = EMA(params, t.ema_decay) if t.ema_decay is not None else None
    model = accelerator.prepare(unet)  # DDP wrapper (and bf16 autocast) when applicable
    noise_gen = torch.Generator(device=device).manual_seed(cfg.seed * 1000 + rank)
    position = DataPosition()
    skips = SkipCounter()
    step = 0

    if resume_from is not None:
        state = load_training_state(resume_from)
        unet.load_temporal_weights(os.path.join(resume_from, "temporal"))
        optimizer.load_state_dict(state["optimizer"])
        lr_scheduler.load_state_dict(state["lr_scheduler"])
        if ema is not None:
            if state.get("ema") is None:
                raise ValueError(f"checkpoint {resume_from!r} has no EMA state but train.ema_decay is set")
            ema.load_state_dict(state["ema"])
        step = int(state["step"])
        position = DataPosition(**state["data_position"])
        skips.load_state_dict(state.get("skips", {}))
        rng = load_rank_state(resume_from, rank)
        if rng is None:
            logger.warning("checkpoint %s was written by fewer processes; rank %d keeps fresh RNG states",
                           resume_from, rank)
        else:
            restore_rng_state(rng, noise_gen)
        if is_main:
            logger.info("resumed from %s at step %d (epoch %d, batch %d)", resume_from, step,
                        position.epoch, position.batch)

    manager = CheckpointManager(ckpt_root, keep_last=t.keep_last, rank=rank, world_size=world,
                                barrier=accelerator.wait_for_everyone)

    def save_checkpoint() -> str:
        def write_shared(tmp: str) -> None:
            unet.save_temporal_weights(os.path.join(tmp, "temporal"))
            if ema is not None:
                with _swapped_in(params, ema):
                    unet.save_temporal_weights(os.path.join(tmp, "ema_temporal"))
            torch.save({"step": step, "optimizer": optimizer.state_dict(), "lr_scheduler": lr_scheduler.state_dict(),
                        "ema": ema.state_dict() if ema is not None else None,
                        "data_position": {"epoch": position.epoch, "batch": position.batch},
                        "skips": skips.state_dict(), "config": config_to_dict(cfg), "world_size": world},
                       os.path.join(tmp, "training_state.pt"))
        return manager.save(step, write_shared, capture_rng_state(noise_gen))

    writer = None
    if is_main and t.tensorboard:
        from torch.utils.tensorboard import SummaryWriter
        writer = SummaryWriter(os.path.join(cfg.output_dir, "logs"))

    grad_step = GradientStep(model, noise_scheduler, noise_gen, params, accumulation=t.gradient_accumulation_steps,
                             cuda_graph=use_graph, backward=accelerator.backward,
                             eager_on_capture_failure=t.cuda_graph is None)
    stream = batch_stream(dataset, position, t.batch_size, cfg.seed, world, rank, d.num_workers)
    accum = t.gradient_accumulation_steps
    losses, local_losses, steps_done, step_seconds = [], [], [], []
    last_ckpt = None
    end_step = t.max_steps if stop_at_step is None else min(t.max_steps, stop_at_step)
    bar = tqdm(total=t.max_steps, initial=step, desc="train", disable=not (is_main and t.progress))
    frames_seen, t0 = 0, time.perf_counter()
    while step < end_step:
        micro, step_start = [], time.perf_counter()
        for k in range(accum):
            batch = next(stream)
            for path, reason in batch["skipped"]:
                skips.add(path, reason)
            sync = contextlib.nullcontext() if k == accum - 1 else accelerator.no_sync(model)
            with sync:
                if "latents" in batch:
                    latents = batch["latents"].to(device)
                else:
                    latents = encode_pixels(vae, batch["pixel_values"].to(device))
                text_emb = encode_text(tokenizer, text_encoder, batch["caption"], device)
                micro.append(grad_step(latents, text_emb))
            frames_seen += latents.shape[0] * latents.shape[1]
        grad_norm = None
        if o.max_grad_norm is not None:
            grad_norm = accelerator.clip_grad_norm_(params, o.max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        grad_step.zero_grad(optimizer)
        if ema is not None:
            ema.update(params)
        step += 1
        local = torch.stack(micro).mean()
        global_loss = accelerator.reduce(local.to(device), reduction="mean").item()
        if not math.isfinite(global_loss):
            raise FloatingPointError(f"loss is {global_loss} at step {step}; stopping (last checkpoint: {last_ckpt})")
        losses.append(global_loss)
        local_losses.append(local.item())
        steps_done.append(step)
        step_seconds.append(time.perf_counter() - step_start)  # global_loss.item() synced the device
        bar.update(1)
        bar.set_postfix(loss=f"{global_loss:.4f}", lr=f"{lr_scheduler.get_last_lr()[0]:.2e}")
        if writer is not None and (step % t.log_every == 0 or step == end_step):
            writer.add_scalar("train/loss", global_loss, step)
            writer.add_scalar("train/lr", lr_scheduler.get_last_lr()[0], step)
            if grad_norm is not None:
                writer.add_scalar("train/grad_norm", float(grad_norm), step)
            writer.add_scalar("data/skipped_videos", len(skips.paths), step)
        if step % t.checkpoint_every == 0 or step == t.max_steps:
            last_ckpt = save_checkpoint()
    bar.close()
    elapsed = time.perf_counter() - t0

    if step >= t.max_steps and is_main:
        final = os.path.join(cfg.output_dir, "final")
        unet.save_temporal_weights(os.path.join(final, "temporal"))
        if ema is not None:
            with _swapped_in(params, ema):
                unet.save_temporal_weights(os.path.join(final, "ema_temporal"))
    accelerator.wait_for_everyone()

    checksum = param_checksum(params)
    checksums = _gather_objects(accelerator, checksum)
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    # frames per step (all processes; the same every step) over the median step time
    steady_fps = frames_seen * world / len(step_seconds) / float(np.median(step_seconds)) if step_seconds else None
    skip_total = _gather_skips(accelerator, skips)
    results = {"losses": losses, "steps": steps_done, "local_losses": local_losses, "final_step": step,
               "last_checkpoint": last_ckpt, "skipped_videos": len(skip_total), "skipped_paths": sorted(skip_total),
               "skip_events": skips.count, "param_checksum": checksum, "rank_checksums": checksums,
               "world_size": world, "trainable_parameters": n_train, "total_parameters": n_total,
               "mixed_precision": mixed, "cuda_graph": grad_step.cuda_graph,
               "frames_per_second": frames_seen * world / max(elapsed, 1e-9),
               "step_seconds": step_seconds,
               "frames_per_second_median_step": steady_fps,
               "peak_memory_bytes": _gather_objects(accelerator, peak),
               "output_dir": cfg.output_dir, "resumed_from": resume_from}
    if skip_total and is_main:
        logger.warning("%d unreadable or too-short videos were skipped (see results.json 'skipped_paths')",
                       len(skip_total))
    if is_main:
        with open(os.path.join(cfg.output_dir, "results.json"), "w", encoding="utf-8") as fh:
            json.dump(results, fh, indent=1)
    if writer is not None:
        writer.close()
    return results


@contextlib.contextmanager
def _swapped_in(params, ema: EMA):
    """Temporarily put the EMA weights into ``params``."""
    backup = [p.detach().clone() for p in params]
    ema.copy_to(params)
    try:
        yield
    finally:
        with torch.no_grad():
            for p, b in zip(params, backup):
                p.copy_(b)


def _gather_objects(accelerator, value):
    """``[value of rank 0, value of rank 1, ...]`` (picklable values)."""
    if accelerator.num_processes == 1:
        return [value]
    from accelerate.utils import gather_object
    return list(gather_object([value]))


def _gather_skips(accelerator, skips: SkipCounter):
    if accelerator.num_processes == 1:
        return set(skips.paths)
    from accelerate.utils import gather_object
    return {p for paths in gather_object([sorted(skips.paths)]) for p in paths}
