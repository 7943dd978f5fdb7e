"""``run_demo``: the whole demo, stage by stage, each stage skipped on ``resume`` once finished.

Stages: ``data`` (synthetic set) -> ``image`` (tiny text-to-image model) -> ``video:<variant>``
(inflate + temporal training, for each of :data:`VARIANTS`) -> ``samples`` (videos per model) ->
report (GIFs, contact sheet, report.json/.md; always rewritten from the stored samples).
"""
from __future__ import annotations

import json
import os
import time
from typing import Dict, Optional

import numpy as np
import torch

from .config import VARIANTS, DemoConfig
from .data import load_clip_set, make_clip_set
from .measure import MIN_AREA_FRACTION, MIN_STEP_PX, measure_video, summarize
from .models import load_image_model, save_image_model
from .output_dir import prepare_output_dir, write_state
from .report import contact_sheet, slug, write_gifs, write_report
from .sampling import initial_noise, sample_videos
from .train import build_video_model, train_image_model, train_video_model

__all__ = ["resolve_device", "run_demo", "MEASURE_DEFINITION"]

MEASURE_DEFINITION = (
    "Each pixel is assigned to the nearest colour among the set's shape colours and its background; the "
    "captioned colour's pixels are the shape (found when they cover >= {area:.0%} of the frame), their mean "
    "position its centroid. detected: fraction of frames with the shape found. direction_agreement: fraction "
    "of frame steps moving >= {step} px along the captioned direction and more along it than across it. "
    "displacement: signed travel along the captioned direction from the first to the last frame with the "
    "shape found, in frame widths (real clips: 0.5). jitter_px: mean |second difference| of the centroid "
    "(0 for constant velocity). frame_change: mean absolute pixel change between consecutive frames (0..1). "
    "Means over videos; NaN (undefined) values skipped, counted in *_defined in report.json."
).format(area=MIN_AREA_FRACTION, step=MIN_STEP_PX)


def resolve_device(device: str) -> torch.device:
    """``"auto"`` -> ``cuda`` when available, else ``cpu``; anything else must be a valid torch device."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError as err:
        raise ValueError(f"--device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r} ({err})") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"--device {device!r}: CUDA is not available on this machine (use 'cpu' or 'auto')")
    return dev


def _loss_info(losses, steps, params, seconds) -> dict:
    k = max(1, len(losses) // 10)
    return dict(steps=steps, trainable_parameters=int(params), loss_start=float(np.mean(losses[:k])),
                loss_end=float(np.mean(losses[-k:])), seconds=float(seconds))


def _finish(out_dir: str, state: dict, stage: str, info: dict) -> None:
    state["stages"][stage] = info
    write_state(out_dir, state)


def run_demo(out_dir: str, cfg: Optional[DemoConfig] = None, device: str = "auto", resume: bool = False,
             overwrite: bool = False, progress: bool = True, log=print) -> Dict[str, object]:
    """Run the demo into ``out_dir``; returns the report dict (also written as report.json).

    Raises :class:`tfaa.demo.output_dir.DemoOutputError` for output-folder problems and
    :class:`tfaa.demo.config.DemoConfigError` for bad settings, before any model work.
    """
    cfg = (cfg or DemoConfig()).validate()
    dev = resolve_device(device)
    out_dir = os.path.abspath(os.fspath(out_dir))
    state = prepare_output_dir(out_dir, cfg.to_dict(), resume=resume, overwrite=overwrite)
    done = state["stages"]
    t_start = time.time()
    torch.manual_seed(cfg.seed)

    data_dir = os.path.join(out_dir, "data")
    if "data" in done:
        clips = load_clip_set(cfg, data_dir)
        log(f"[resume] synthetic set: {len(clips.captions)} clips from {data_dir}")
    else:
        clips = make_clip_set(cfg, data_dir, progress=progress)
        _finish(out_dir, state, "data", {"clips": len(clips.captions)})

    image_dir = os.path.join(out_dir, "image_model")
    if "image" in done:
        unet2d, text_encoder, tokenizer = load_image_model(image_dir)
        unet2d, text_encoder = unet2d.to(dev), text_encoder.to(dev)
        log(f"[resume] image model from {image_dir}")
    else:
        t0 = time.time()
        unet2d, text_encoder, tokenizer, losses = train_image_model(
            cfg, clips, dev, os.path.join(out_dir, "tokenizer_vocab"), progress=progress)
        params = sum(p.numel() for m in (unet2d, text_encoder) for p in m.parameters() if p.requires_grad)
        save_image_model(image_dir, unet2d, text_encoder, tokenizer)
        _finish(out_dir, state, "image", _loss_info(losses, cfg.steps_image, params, time.time() - t0))

    videos = {}
    for variant in VARIANTS:
        stage, wdir = f"video:{variant}", os.path.join(out_dir, "video_models", slug(variant))
        if stage in done:
            video = build_video_model(unet2d, cfg, variant).to(dev).eval()
            video.load_temporal_weights(wdir)
            log(f"[resume] video model {variant!r} from {wdir}")
        else:
            t0 = time.time()
            video, losses = train_video_model(unet2d, text_encoder, tokenizer, cfg, clips, variant, dev,
                                              progress=progress)
            video.save_temporal_weights(wdir)
            params = sum(p.numel() for p in video.temporal_parameters())
            _finish(out_dir, state, stage, _loss_info(losses, cfg.steps_video, params, time.time() - t0))
        videos[variant] = video

    prompts = [p for p in cfg.prompts for _ in range(cfg.samples_per_prompt)]
    sample_idx = [i for _ in cfg.prompts for i in range(cfg.samples_per_prompt)]
    samples_path = os.path.join(out_dir, "samples.npz")
    if "samples" in done:
        with np.load(samples_path) as z:
            samples = {v: z[slug(v)] for v in VARIANTS}
        log(f"[resume] samples from {samples_path}")
    else:
        noise = initial_noise(len(prompts), cfg.num_frames, cfg.size,
                              [cfg.seed * 100003 + 7919 * k + 1 for k in range(len(prompts))])
        samples = {v: sample_videos(videos[v], text_encoder, tokenizer, prompts, noise, cfg.sample_steps,
                                    cfg.guidance_scale, dev, desc=f"sampling ({v})", progress=progress)
                   for v in VARIANTS}
        np.savez_compressed(samples_path, **{slug(v): s for v, s in samples.items()})
        _finish(out_dir, state, "samples", {"videos_per_model": len(prompts)})

    report = _report(out_dir, cfg, clips, prompts, sample_idx, samples, state, dev, time.time() - t_start)
    log(f"report: {os.path.join(out_dir, 'report.md')}; contact sheet: {report['files']['contact_sheet']}")
    return report


def _report(out_dir, cfg, clips, prompts, sample_idx, samples, state, dev, seconds) -> Dict[str, object]:
    """Measure real clips and samples, write GIFs, the contact sheet and report.json/.md."""
    palette = list(cfg.colors)
    per_video, measure = [], {}
    real_rows = []
    for caption, frames in zip(clips.captions, clips.frames):
        m = measure_video(frames, caption, palette)
        real_rows.append(m)
        per_video.append(dict(model="real clips", prompt=caption, sample=0, **m))
    measure["real clips"] = summarize(real_rows)
    for variant, vids in samples.items():
        rows = []
        for prompt, k, video in zip(prompts, sample_idx, vids):
            m = measure_video(video, prompt, palette)
            rows.append(m)
            per_video.append(dict(model=variant, prompt=prompt, sample=k, **m))
        measure[variant] = summarize(rows)

    gif_dir = os.path.join(out_dir, "gifs")
    real_by_caption = dict(zip(clips.captions, clips.frames))
    first = [i for i, k in enumerate(sample_idx) if k == 0]
    gifs = {"real clips": write_gifs(np.stack([real_by_caption[p] for p in cfg.prompts]), cfg.prompts, gif_dir, "real")}
    for variant, vids in samples.items():
        gifs[variant] = write_gifs(vids[first], cfg.prompts, gif_dir, slug(variant))
    rows = []
    for j, prompt in enumerate(cfg.prompts):
        rows.append((f"{prompt}\nreal clip", real_by_caption[prompt]))
        rows += [(f"{prompt}\n{variant}", vids[first[j]]) for variant, vids in samples.items()]
    sheet = contact_sheet(rows, os.path.join(out_dir, "contact_sheet.png"))
    stages = state["stages"]
    report = dict(
        config=cfg.to_dict(), device=str(dev), seconds_total=float(seconds),
        measure=measure, measure_definition=MEASURE_DEFINITION, per_video=per_video,
        training={name: stages[key] for name, key in
                  [("image model", "image")] + [(f"video model ({v})", f"video:{v}") for v in VARIANTS]},
        files=dict(contact_sheet=sheet, gifs={k: v for k, v in gifs.items()},
                   data=os.path.join(out_dir, "data", "captions.jsonl")))
    json.loads(json.dumps(report))  # fail here, not half-way through writing, if something is not JSON
    write_report(out_dir, report)
    return report
