"""End-to-end sampling benchmark: our video UNet against the spatial-only floor (SD1.5 UNet2D),
AnimateDiff (diffusers UNetMotionModel) and ModelScope (diffusers UNet3DConditionModel), in one
process, full-size models with random weights, bf16, inference (torch.no_grad).

Measured (medians of triton.testing.do_bench through ``common.median_ms``):

- per-step UNet time and peak memory at 2x16 frames 512px (CFG batch 2, 64x64 latents) for: ours
  ``backend="auto"``, ours ``backend="torch"``, ours in fast mode (compiled), UNet2D on the same 32
  frames, UNetMotionModel (SD1.5 UNet2D + MotionAdapter), UNet3DConditionModel (ModelScope config);
- the same at the thesis' setting, 2x8 frames 256px (32x32 latents);
- whole-video time (16 frames, 512px, 25 DDIM steps, CFG, VAE decode, frames to host; SD-size VAE
  and CLIP text encoders with random weights, a tokenizer from a tiny vocabulary): ours in normal
  and fast mode (``pipe.enable_fast_sampling()``), diffusers' AnimateDiffPipeline (UNetMotionModel)
  and TextToVideoSDPipeline (ModelScope's UNet3DConditionModel, with a 1024-wide text encoder);
- step time against frame count (8, 16, 32, 64 frames at 512px): ours (auto), UNet2D,
  UNetMotionModel -> ``step_time_vs_frames.png``;
- the FLOPs per step (FlopCounterMode on the meta device, and an analytic count of what our
  temporal conv and TFAA blocks add), printed before anything is timed.

    python benchmarks/bench_sampling.py --results benchmarks/RESULTS.md     # GPU, < 6 min on an H100
    tfaa bench --results benchmarks/RESULTS.md                              # the same
    python benchmarks/bench_sampling.py --smoke                             # CPU: tiny models, same code path

``--budget-s`` (default 420) bounds the run: sections that would not fit are skipped and the output
says so. ``--smoke`` uses tiny models, fp32, small shapes, 2 denoising steps, and writes nothing
into RESULTS.md (its plot goes to a temporary file unless ``--plot`` is given).
"""
from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Tuple

import torch

_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, _HERE)
sys.path.insert(0, os.path.dirname(_HERE))
from common import env_line, fmt, markdown_table, median_ms, peak_mib, write_section  # noqa: E402

DEFAULT_PLOT = os.path.join(_HERE, "step_time_vs_frames.png")

# ModelScope text-to-video (damo-vilab/text-to-video-ms-1.7b) UNet3DConditionModel config, by hand
MODELSCOPE_UNET3D = dict(
    sample_size=64, in_channels=4, out_channels=4, block_out_channels=(320, 640, 1280, 1280),
    cross_attention_dim=1024, attention_head_dim=64, layers_per_block=2, norm_num_groups=32,
    down_block_types=("CrossAttnDownBlock3D",) * 3 + ("DownBlock3D",),
    up_block_types=("UpBlock3D",) + ("CrossAttnUpBlock3D",) * 3,
)
# MotionAdapter: diffusers' default config (AnimateDiff v1.5 layout), except the positional table
# length 64 (default 32) so the 64-frame point of the sweep runs; the table is an added (F, C)
# slice, so its length changes no compute.
MOTION_ADAPTER = dict(motion_max_seq_length=64)
# SD 1.x VAE and CLIP ViT-L/14 text encoder sizes
SD_VAE = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(128, 256, 512, 512),
              down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
              layers_per_block=2, norm_num_groups=32, sample_size=512, scaling_factor=0.18215)
SD_TEXT = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
               max_position_embeddings=77, hidden_act="quick_gelu", projection_dim=768)


@dataclass
class Scale:
    """Model sizes and shapes of one run: full size (GPU) or tiny (``--smoke``)."""

    unet_config: dict
    unet3d_config: dict
    motion_adapter: dict
    vae_config: dict
    text_config: dict
    text_dim: int
    text_dim_3d: int
    main: Tuple[int, int]             # (frames, pixels) of the main per-step table and the video
    thesis: Tuple[int, int]
    sweep_frames: Tuple[int, ...]
    steps: int                        # denoising steps of the whole-video measurement
    cfg_batch: int = 2

    @staticmethod
    def full() -> "Scale":
        from tfaa.testing import sd14_unet_config

        return Scale(unet_config=sd14_unet_config(), unet3d_config=MODELSCOPE_UNET3D,
                     motion_adapter=MOTION_ADAPTER, vae_config=SD_VAE, text_config=SD_TEXT,
                     text_dim=768, text_dim_3d=1024, main=(16, 512), thesis=(8, 256),
                     sweep_frames=(8, 16, 32, 64), steps=25)

    @staticmethod
    def smoke() -> "Scale":
        from tfaa.testing import TINY_CROSS_ATTENTION_DIM, tiny_unet

        unet_config = {k: v for k, v in tiny_unet().config.items() if not k.startswith("_")}
        unet3d = dict(sample_size=8, in_channels=4, out_channels=4, block_out_channels=(32, 64),
                      cross_attention_dim=48, attention_head_dim=8, layers_per_block=1, norm_num_groups=32,
                      down_block_types=("CrossAttnDownBlock3D", "DownBlock3D"),
                      up_block_types=("UpBlock3D", "CrossAttnUpBlock3D"))
        adapter = dict(block_out_channels=(32, 64), motion_layers_per_block=1, motion_num_attention_heads=2,
                       motion_norm_num_groups=32, motion_max_seq_length=32)
        vae = dict(in_channels=3, out_channels=3, latent_channels=4, block_out_channels=(8, 8, 8, 8),
                   down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                   layers_per_block=1, norm_num_groups=8, sample_size=32)
        text = dict(hidden_size=TINY_CROSS_ATTENTION_DIM, intermediate_size=37, num_hidden_layers=2,
                    num_attention_heads=4, max_position_embeddings=77, projection_dim=TINY_CROSS_ATTENTION_DIM)
        return Scale(unet_config=unet_config, unet3d_config=unet3d, motion_adapter=adapter, vae_config=vae,
                     text_config=text, text_dim=TINY_CROSS_ATTENTION_DIM, text_dim_3d=48, main=(4, 64),
                     thesis=(2, 32), sweep_frames=(2, 4, 8), steps=2)


class Budget:
    """Wall-clock budget of the run: ``fits(cost_s)`` tells whether a section of about that cost
    still fits; skipped sections are recorded with the reason."""

    def __init__(self, seconds: float):
        self.seconds, self.t0 = seconds, time.perf_counter()
        self.skipped: List[str] = []

    def elapsed(self) -> float:
        return time.perf_counter() - self.t0

    def fits(self, cost_s: float, what: str) -> bool:
        left = self.seconds - self.elapsed()
        if cost_s <= left:
            return True
        self.skipped.append(f"{what} (needs ~{cost_s:.0f} s, {max(left, 0):.0f} s of the budget left)")
        print(f"[skip] {self.skipped[-1]}", flush=True)
        return False


def log(msg: str, budget: Optional[Budget] = None) -> None:
    stamp = f"[{budget.elapsed():6.1f}s] " if budget else ""
    print(stamp + msg, flush=True)


# ---------------------------------------------------------------------------- models
def _randomize_zero_params(module: torch.nn.Module, std: float = 0.02) -> None:
    """Our temporal blocks' zero-initialised output layers get small random weights, so the timed
    model computes a real (non-identity) temporal path. Timing does not depend on values; NaN-free
    outputs do."""
    with torch.no_grad():
        for p in module.parameters():
            if not p.any():
                p.normal_(0.0, std)


def build_models(scale: Scale, device: torch.device, dtype: torch.dtype) -> Dict[str, torch.nn.Module]:
    """``unet2d``, ``ours`` (VideoUNet inflated from unet2d), ``motion`` (UNetMotionModel from unet2d +
    MotionAdapter), ``unet3d``: random weights, built directly on ``device``, cast to ``dtype``, eval."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNet3DConditionModel, UNetMotionModel

    from tfaa.models import VideoUNet

    with device:
        torch.manual_seed(0)
        unet2d = UNet2DConditionModel(**scale.unet_config)
        ours = VideoUNet.from_unet2d(unet2d)
        _randomize_zero_params(ours.temporal)
        motion = UNetMotionModel.from_unet2d(unet2d, MotionAdapter(**scale.motion_adapter))
        unet3d = UNet3DConditionModel(**scale.unet3d_config)
    models = dict(unet2d=unet2d, ours=ours, motion=motion, unet3d=unet3d)
    for m in models.values():
        m.to(device=device, dtype=dtype).eval().requires_grad_(False)
    return models


def _text_encoder(tokenizer, config: dict):
    from transformers import CLIPTextConfig, CLIPTextModel

    return CLIPTextModel(CLIPTextConfig(
        vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, **config))


def _sd_components(scale: Scale, device: torch.device, seed: int):
    """(tokenizer, vae, text_encoder): a tokenizer from a tiny vocabulary, SD-size AutoencoderKL and
    CLIP text encoder (``scale``'s configs) with random weights drawn after ``manual_seed(seed)``."""
    from diffusers import AutoencoderKL

    from tfaa.testing import tiny_tokenizer

    tokenizer = tiny_tokenizer()
    with device:
        torch.manual_seed(seed)
        return tokenizer, AutoencoderKL(**scale.vae_config), _text_encoder(tokenizer, scale.text_config)


def _ready(pipe, device: torch.device, dtype: torch.dtype):
    """``pipe`` on ``device`` in ``dtype``, its models in eval mode without gradients, no progress bar."""
    pipe.to(device=device, dtype=dtype)
    for m in pipe.components.values():
        if isinstance(m, torch.nn.Module):
            m.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    return pipe


def build_pipeline(scale: Scale, ours, device: torch.device, dtype: torch.dtype):
    """A TFAAPipeline around a copy of ``ours`` (so fast mode does not touch the benchmarked model),
    an SD-size VAE and CLIP text encoder with random weights, a tokenizer from a tiny vocabulary and
    SD's DDIM scheduler."""
    from tfaa.models import VideoUNet
    from tfaa.pipeline import TFAAPipeline
    from tfaa.testing import tiny_scheduler

    with device:
        unet = VideoUNet.from_unet2d(ours.unet)
        unet.temporal.load_state_dict(ours.temporal.state_dict())
    tokenizer, vae, text_encoder = _sd_components(scale, device, seed=1)
    return _ready(TFAAPipeline(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                               scheduler=tiny_scheduler()), device, dtype)


# whole-video rows of the peers' own pipelines -> their per-step rows (for the time estimate)
PEER_PIPELINES = {"AnimateDiffPipeline (UNetMotionModel)": "UNetMotionModel (AnimateDiff)",
                  "TextToVideoSDPipeline (UNet3DConditionModel)": "UNet3DConditionModel (ModelScope)"}


def build_peer_pipelines(scale: Scale, motion, unet3d, device: torch.device, dtype: torch.dtype) -> Dict[str, object]:
    """diffusers' own pipelines around the benchmarked peer UNets, with the same kind of components
    as ours (random-weight SD-size VAE, CLIP text encoders, tiny-vocabulary tokenizer, SD's DDIM):
    ``AnimateDiffPipeline`` (UNetMotionModel, 768-wide text encoder) and ``TextToVideoSDPipeline``
    (UNet3DConditionModel; a 1024-wide, 16-head text encoder like ModelScope's OpenCLIP-H)."""
    from diffusers import AnimateDiffPipeline, TextToVideoSDPipeline

    from tfaa.testing import tiny_scheduler

    tokenizer, vae, text_encoder = _sd_components(scale, device, seed=2)
    dim = scale.text_dim_3d
    with device:
        text_encoder_3d = _text_encoder(tokenizer, dict(scale.text_config, hidden_size=dim, projection_dim=dim,
                                                        intermediate_size=4 * dim, num_attention_heads=16))
    animatediff, modelscope = PEER_PIPELINES
    return {
        animatediff: _ready(AnimateDiffPipeline(
            vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=motion, motion_adapter=None,
            scheduler=tiny_scheduler()), device, dtype),
        modelscope: _ready(TextToVideoSDPipeline(
            vae=vae, text_encoder=text_encoder_3d, tokenizer=tokenizer, unet=unet3d,
            scheduler=tiny_scheduler()), device, dtype),
    }


def _free_memory(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def n_params(model: torch.nn.Module) -> float:
    return sum(p.numel() for p in model.parameters()) / 1e6


# ---------------------------------------------------------------------------- one UNet step
def step_inputs(kind: str, frames: int, pixels: int, scale: Scale, device, dtype):
    """Inputs of one CFG UNet call: ``(B*F, 4, h, w)`` frame-major for ours/unet2d, ``(B, 4, F, h, w)``
    for the diffusers video UNets; random text embeddings of the model's width, as each model's
    pipeline passes them."""
    b, h = scale.cfg_batch, pixels // 8
    text_dim = scale.text_dim_3d if kind == "unet3d" else scale.text_dim
    g = torch.Generator(device="cpu").manual_seed(0)
    if kind in ("ours", "unet2d"):
        sample = torch.randn(b * frames, 4, h, h, generator=g)
    else:
        sample = torch.randn(b, 4, frames, h, h, generator=g)
    # UNet3DConditionModel repeats the text per frame itself; UNetMotionModel expects it repeated
    # (AnimateDiffPipeline does prompt_embeds.repeat_interleave(num_frames)), as do ours and UNet2D
    ehs = torch.randn(b if kind == "unet3d" else b * frames, 77, text_dim, generator=g)
    t = torch.tensor(500, device=device)
    return sample.to(device, dtype), t, ehs.to(device, dtype)


def step_fn(kind: str, model, frames: int, pixels: int, scale: Scale, device, dtype) -> Callable[[], torch.Tensor]:
    """A no-grad closure running one UNet step of ``model`` (``kind``: ours/unet2d/motion/unet3d)."""
    sample, t, ehs = step_inputs(kind, frames, pixels, scale, device, dtype)
    if kind == "ours":
        call = lambda: model(sample, t, ehs, num_frames=frames, return_dict=False)[0]  # noqa: E731
    else:
        call = lambda: model(sample, t, ehs, return_dict=False)[0]  # noqa: E731

    def run():
        with torch.no_grad():
            return call()
    return run


@dataclass
class StepRow:
    name: str
    setting: str
    batch: str
    ms: Optional[float] = None
    mib: Optional[float] = None
    params_m: Optional[float] = None
    gflop: Optional[float] = None
    note: str = ""


def time_step(name: str, kind: str, model, frames: int, pixels: int, scale: Scale, device, dtype,
              rep_ms: int, params_m: Optional[float] = None, gflop: Optional[float] = None) -> StepRow:
    """Median step time and peak memory (above the weights) of one model at one shape; a row that
    says OOM when it does not fit."""
    row = StepRow(name, f"{frames} frames {pixels}px", f"{scale.cfg_batch}x{frames}", params_m=params_m,
                  gflop=gflop)
    try:
        fn = step_fn(kind, model, frames, pixels, scale, device, dtype)
        out = fn()  # first call: Triton autotuning / compilation outside the timed runs
        if not torch.isfinite(out).all():
            row.note = "non-finite output (random weights)"
        del out
        row.ms = median_ms(fn, warmup_ms=100, rep_ms=rep_ms)
        row.mib = peak_mib(fn)
    except torch.cuda.OutOfMemoryError:
        row.note = "OOM"
    _free_memory(device)
    return row


# ---------------------------------------------------------------------------- FLOPs
def temporal_flops(ours, frames: int, pixels: int, scale: Scale) -> Dict[str, float]:
    """Analytic FLOPs (multiply-add = 2) our temporal blocks add per step, from the activation shapes
    the spatial modules they follow produce (recorded on the meta device):

    - temporal conv block after a ResNet of ``C`` channels at ``h x w``: ``layers * 2*C*C*K * N*h*w``
      (N = CFG batch * frames; GroupNorm/SiLU are O(N*C*h*w), left out);
    - TFAA block after a transformer of ``C`` channels at ``L`` tokens: packed qkv ``2*3C*C*N*L``,
      out projection ``2*C*C*N*L``, attention over 2 keys ``8*N*L*C``."""
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D

    cfg = ours.temporal.config
    layers, k = cfg.conv_num_layers, cfg.conv_kernel_size
    shapes: List[Tuple[str, Tuple[int, ...]]] = []
    meta = _meta_copy_unet2d(ours.unet.config)  # same structure, no compute, no memory
    for m in meta.modules():
        if isinstance(m, (ResnetBlock2D, BasicTransformerBlock)):
            kind = "conv" if isinstance(m, ResnetBlock2D) else "tfaa"
            m.register_forward_hook(lambda mod, a, out, kind=kind: shapes.append((kind, tuple(out.shape))))
    n, h = scale.cfg_batch * frames, pixels // 8
    with torch.no_grad():
        meta(torch.empty(n, 4, h, h, device="meta"), torch.tensor(500, device="meta"),
             torch.empty(n, 77, scale.text_dim, device="meta"))
    conv = tfaa = 0.0
    for kind, shp in shapes:
        if kind == "conv":
            nn_, c, hh, ww = shp
            conv += layers * 2 * c * c * k * nn_ * hh * ww
        else:
            nn_, l, c = shp
            tfaa += (2 * 3 * c * c + 2 * c * c + 8 * c) * nn_ * l
    return {"temporal conv": conv, "TFAA": tfaa}


def _meta_copy_unet2d(config):
    from diffusers import UNet2DConditionModel

    with torch.device("meta"):
        return UNet2DConditionModel(**{k: v for k, v in dict(config).items() if not k.startswith("_")}).eval()


def counted_flops(factory: Callable[[], torch.nn.Module], kind: str, frames: int, pixels: int,
                  scale: Scale) -> Optional[float]:
    """FLOPs of one step counted by ``torch.utils.flop_counter.FlopCounterMode`` on a meta-device
    model built by ``factory`` (None when the model does not run on meta tensors)."""
    from torch.utils.flop_counter import FlopCounterMode

    try:
        with torch.device("meta"):
            model = factory().eval()
        fn = step_fn(kind, model, frames, pixels, scale, torch.device("meta"), torch.float32)
        counter = FlopCounterMode(display=False)
        with counter:
            fn()
        return float(counter.get_total_flops())
    except Exception as err:  # noqa: BLE001 - report and go on without the count
        print(f"[flops] {kind}: not countable on meta ({type(err).__name__}: {err})", flush=True)
        return None


def _g(flops: Optional[float]) -> str:
    if flops is None:
        return "—"
    g = flops / 1e9
    return f"{g:.0f}" if g >= 100 else f"{g:.4g}"


def flop_report(scale: Scale, ours) -> Tuple[str, Dict[str, Optional[float]]]:
    """Print and return the per-step FLOP estimate at the main setting; ``{kind: GFLOP}``."""
    from diffusers import MotionAdapter, UNet2DConditionModel, UNet3DConditionModel, UNetMotionModel

    frames, pixels = scale.main
    spatial = counted_flops(lambda: UNet2DConditionModel(**scale.unet_config), "unet2d", frames, pixels, scale)
    temporal = temporal_flops(ours, frames, pixels, scale)
    motion = counted_flops(lambda: UNetMotionModel.from_unet2d(
        UNet2DConditionModel(**scale.unet_config), MotionAdapter(**scale.motion_adapter), load_weights=False),
        "motion", frames, pixels, scale)
    unet3d = counted_flops(lambda: UNet3DConditionModel(**scale.unet3d_config), "unet3d", frames, pixels, scale)
    added = sum(temporal.values())
    g = lambda x: None if x is None else x / 1e9  # noqa: E731
    lines = [f"FLOPs per UNet step at {scale.cfg_batch}x{frames} frames {pixels}px (multiply-add = 2):"]
    lines.append(f"  UNet2D (spatial only, FlopCounterMode on meta): {_g(spatial)} GFLOP")
    for name, v in temporal.items():
        rel = f" = {100 * v / spatial:.1f}% of UNet2D" if spatial else ""
        lines.append(f"  + our {name} blocks (analytic): {_g(v)} GFLOP{rel}")
    if spatial:
        lines.append(f"  ours total: {_g(spatial + added)} GFLOP = {(spatial + added) / spatial:.3f}x UNet2D "
                     "(a compute-bound lower bound on our step / UNet2D step)")
    lines.append(f"  UNetMotionModel (counted): {_g(motion)} GFLOP"
                 + (f" = {motion / spatial:.3f}x UNet2D" if motion and spatial else ""))
    lines.append(f"  UNet3DConditionModel (counted): {_g(unet3d)} GFLOP"
                 + (f" = {unet3d / spatial:.3f}x UNet2D" if unet3d and spatial else ""))
    text = "\n".join(lines)
    print(text, flush=True)
    ours_total = spatial + added if spatial else None
    return text, {"unet2d": g(spatial), "ours": g(ours_total), "motion": g(motion), "unet3d": g(unet3d)}


# ---------------------------------------------------------------------------- whole video
@dataclass
class VideoResult:
    name: str
    seconds: List[float] = field(default_factory=list)
    first_call_s: Optional[float] = None
    mib: Optional[float] = None
    note: str = ""

    @property
    def median(self) -> Optional[float]:
        return sorted(self.seconds)[len(self.seconds) // 2] if self.seconds else None


def _sync():
    if torch.cuda.is_available():
        torch.cuda.synchronize()


def time_video(pipe, name: str, scale: Scale, runs: int) -> Tuple[VideoResult, torch.Tensor]:
    """Whole-video wall time (text encoding, ``steps`` DDIM steps with CFG, VAE decode, frames to
    host as numpy): one untimed first call, then ``runs`` timed ones. ``pipe`` is ours (``seed``) or
    a diffusers pipeline (``generator``). Returns the result and the frames of the last run (for the
    fast-vs-normal comparison)."""
    from tfaa.pipeline import TFAAPipeline

    frames, pixels = scale.main
    res = VideoResult(name)
    kwargs = dict(num_frames=frames, height=pixels, width=pixels, num_inference_steps=scale.steps,
                  guidance_scale=7.5, output_type="np")

    def call():
        seed = {"seed": 0} if isinstance(pipe, TFAAPipeline) else \
            {"generator": torch.Generator(pipe.device).manual_seed(0)}
        return pipe("a cat running", **kwargs, **seed).frames

    _sync()
    t0 = time.perf_counter()
    out = call()
    _sync()
    res.first_call_s = time.perf_counter() - t0
    for _ in range(runs):
        _sync()
        t0 = time.perf_counter()
        out = call()
        _sync()
        res.seconds.append(time.perf_counter() - t0)
    res.mib = peak_mib(call)
    if not torch.isfinite(torch.as_tensor(out)).all():
        res.note = "non-finite frames (random weights)"
    return res, torch.as_tensor(out)


# ---------------------------------------------------------------------------- plot + table
def plot_sweep(sweep: Dict[str, Dict[int, Optional[float]]], pixels: int, path: str, title_env: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    for name, points in sweep.items():
        xs = [f for f, ms in sorted(points.items()) if ms is not None]
        if xs:
            ax.plot(xs, [points[f] for f in xs], marker="o", label=name)
    ax.set_xscale("log", base=2)
    ax.set_yscale("log")
    frames = sorted({f for p in sweep.values() for f in p})
    ax.set_xticks(frames)
    ax.set_xticklabels([str(f) for f in frames])
    ax.set_xlabel(f"frames per video (CFG batch 2, {pixels}px)")
    ax.set_ylabel("UNet step (ms)")
    ax.set_title(f"UNet step time vs frame count\n{title_env}", fontsize=8)
    ax.grid(True, which="both", alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def render(step_rows: List[StepRow], videos: List[VideoResult], sweep, flops_text: str, budget: Budget,
           scale: Scale, dtype, fast_desc: str, extra: List[str]) -> str:
    floor = {r.setting: r.ms for r in step_rows if r.name.startswith("UNet2D") and r.ms}
    body = []
    for r in step_rows:
        rel = fmt(r.ms / floor[r.setting], 2) if r.ms and floor.get(r.setting) else "—"
        tflops = fmt(r.gflop / r.ms, 0) if r.gflop and r.ms else "—"
        body.append([r.name, r.setting, r.batch, fmt(r.ms, 1), rel, fmt(r.mib, 0), fmt(r.params_m, 0),
                     fmt(r.gflop, 0), tflops, r.note or ""])
    out = [f"Device: {env_line()}; {str(dtype).replace('torch.', '')}; random weights; inference "
           "(torch.no_grad); step times are medians of triton.testing.do_bench (ms); peak MiB is above "
           "the weights; CFG batch: 2 videos (uncond + cond) in one call.", "",
           "**Per-step UNet time**", "",
           markdown_table(["model", "setting", "CFG batch x frames", "step ms", "x UNet2D", "peak MiB",
                           "params M", "GFLOP/step", "TFLOP/s", "note"], body)]
    if videos:
        frames, pixels = scale.main
        out += ["", f"**Whole video: {frames} frames, {pixels}px, {scale.steps} DDIM steps, CFG 7.5, "
                "text encoder + VAE decode included, frames to host**", ""]
        out.append(markdown_table(
            ["pipeline", "median s", "runs", "first call s (compile/autotune)", "peak MiB", "note"],
            [[v.name, fmt(v.median, 2), len(v.seconds), fmt(v.first_call_s, 1), fmt(v.mib, 0), v.note]
             for v in videos]))
        out.append(f"\nFast mode: {fast_desc}.")
    if sweep:
        frames = sorted({f for p in sweep.values() for f in p})
        out += ["", f"**Step time vs frames** ({scale.main[1]}px, CFG batch 2; "
                "plot: step_time_vs_frames.png)", ""]
        out.append(markdown_table(["model"] + [f"{f} frames ms" for f in frames],
                                  [[name] + [fmt(p.get(f), 1) for f in frames] for name, p in sweep.items()]))
    out += ["", "```", flops_text, "```"]
    out += extra
    if budget.skipped:
        out += ["", "Skipped (time budget): " + "; ".join(budget.skipped)]
    return "\n".join(out)


# ---------------------------------------------------------------------------- main
def run(args) -> str:
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type != "cuda" and not args.smoke:
        raise SystemExit("bench_sampling needs a CUDA GPU (use --smoke to check the code path on CPU)")
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    scale = Scale.smoke() if args.smoke else Scale.full()
    budget = Budget(args.budget_s)
    rep_ms = 1000 if device.type == "cuda" else 1
    log(f"{env_line()}; {'smoke (tiny models)' if args.smoke else 'full size'}; budget {args.budget_s:.0f} s", budget)

    models = build_models(scale, device, dtype)
    ours, unet2d, motion, unet3d = models["ours"], models["unet2d"], models["motion"], models["unet3d"]
    params = {k: n_params(m) for k, m in models.items()}
    log("built: " + ", ".join(f"{k} {v:.0f}M params" for k, v in params.items()), budget)
    flops_text, gflop = flop_report(scale, ours)
    extra: List[str] = []

    from tfaa_kernels.backends import AUTO_PREFERENCE, resolve_backend
    auto = ", ".join(f"{op}={resolve_backend('auto', op, device)}" for op in AUTO_PREFERENCE)
    extra.append(f"\nbackend='auto' resolves to: {auto}.")
    log(f"backend='auto' resolves to: {auto}", budget)

    rows: List[StepRow] = []

    def step(name, kind, model, setting, gf=None, params_m=None):
        frames, pixels = setting
        r = time_step(name, kind, model, frames, pixels, scale, device, dtype, rep_ms, params_m, gf)
        log(f"step {name} @ {r.setting}: {fmt(r.ms, 2)} ms, peak {fmt(r.mib, 0)} MiB {r.note}", budget)
        rows.append(r)
        return r

    for setting, gf_ok in ((scale.main, True), (scale.thesis, False)):
        g = (lambda k: gflop[k]) if gf_ok else (lambda k: None)
        ours.set_backend("auto")
        step("ours (auto)", "ours", ours, setting, g("ours"), params["ours"])
        ours.set_backend("torch")
        step("ours (torch)", "ours", ours, setting, g("ours"), params["ours"])
        ours.set_backend("auto")
        step("UNet2D (spatial only)", "unet2d", unet2d, setting, g("unet2d"), params["unet2d"])
        step("UNetMotionModel (AnimateDiff)", "motion", motion, setting, g("motion"), params["motion"])
        step("UNet3DConditionModel (ModelScope)", "unet3d", unet3d, setting, g("unet3d"), params["unet3d"])

    # whole video: normal, then fast mode on the pipeline's own copy of our UNet
    videos: List[VideoResult] = []
    fast_desc = "not run"
    frames, pixels = scale.main
    est_step = next((r.ms for r in rows if r.name == "ours (auto)" and r.ms), 200.0) / 1e3
    est_video = scale.steps * est_step + 1.0
    if not args.skip_video and budget.fits(5 * est_video + 10, "whole video, normal mode"):
        pipe = build_pipeline(scale, ours, device, dtype)
        res, normal_frames = time_video(pipe, "ours, normal (backend auto)", scale, args.video_runs)
        videos.append(res)
        log(f"video normal: {fmt(res.median, 2)} s (first call {fmt(res.first_call_s, 1)} s)", budget)
        if budget.fits(args.compile_estimate_s + 5 * est_video, "whole video, fast mode (compile)"):
            cfg = pipe.enable_fast_sampling(compile_backend=args.compile_backend)
            fast_desc = cfg.describe()
            res, fast_frames = time_video(pipe, "ours, fast (enable_fast_sampling)", scale, args.video_runs)
            diff = (fast_frames.float() - normal_frames.float()).abs()
            res.note = (res.note + "; " if res.note else "") + \
                f"frames vs normal: mean |diff| {diff.mean().item():.2e}, max {diff.max().item():.2e}"
            videos.append(res)
            log(f"video fast: {fmt(res.median, 2)} s (first call incl. compile {fmt(res.first_call_s, 1)} s); "
                f"{res.note}", budget)
            # the compiled UNet's step at the main setting (same inputs as the eager rows)
            step("ours (fast mode, compiled)", "ours", pipe.unet, scale.main, gflop["ours"], params["ours"])
        del pipe
        _free_memory(device)
    # the peers' own pipelines (eager, as diffusers runs them), each ~ its step time x steps
    if not args.skip_video:
        est = {name: scale.steps * (next((r.ms for r in rows if r.name == row and r.ms), 250.0) / 1e3) + 1.0
               for name, row in PEER_PIPELINES.items()}
        if budget.fits(sum(5 * e for e in est.values()) + 10, "whole video, peer pipelines"):
            for name, pipe in build_peer_pipelines(scale, motion, unet3d, device, dtype).items():
                res, _ = time_video(pipe, name, scale, args.video_runs)
                videos.append(res)
                log(f"video {name}: {fmt(res.median, 2)} s (first call {fmt(res.first_call_s, 1)} s)", budget)
            del pipe
            _free_memory(device)

    # step time vs frame count
    sweep: Dict[str, Dict[int, Optional[float]]] = {}
    if not args.skip_sweep:
        known = {(r.name, r.setting): r.ms for r in rows}
        for name, kind, model in (("ours (auto)", "ours", ours), ("UNet2D (spatial only)", "unet2d", unet2d),
                                  ("UNetMotionModel (AnimateDiff)", "motion", motion)):
            sweep[name] = {}
            for f in scale.sweep_frames:
                setting = f"{f} frames {pixels}px"
                if (name, setting) in known:
                    sweep[name][f] = known[(name, setting)]
                    continue
                ref = known.get((name, f"{frames} frames {pixels}px")) or 200.0
                if not budget.fits(15 * ref * f / frames / 1e3 + 5, f"sweep {name} {f} frames"):
                    sweep[name][f] = None
                    continue
                r = time_step(name, kind, model, f, pixels, scale, device, dtype, rep_ms)
                log(f"sweep {name} @ {f} frames: {fmt(r.ms, 2)} ms {r.note}", budget)
                sweep[name][f] = r.ms
        plot_path = args.plot or (DEFAULT_PLOT if not args.smoke else
                                  os.path.join(tempfile.gettempdir(), "tfaa_step_time_vs_frames_smoke.png"))
        plot_sweep(sweep, pixels, plot_path, env_line())
        log(f"plot written: {plot_path}", budget)

    extra.append(f"\nTotal benchmark wall time: {budget.elapsed():.0f} s.")
    return render(rows, videos, sweep, flops_text, budget, scale, dtype, fast_desc, extra)


def build_arg_parser(parser: Optional[argparse.ArgumentParser] = None) -> argparse.ArgumentParser:
    p = parser or argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--results", help="write the tables into this RESULTS.md (section bench_sampling)")
    p.add_argument("--smoke", action="store_true", help="tiny models on any device: checks the code path")
    p.add_argument("--plot", default=None, help=f"plot path (default {os.path.relpath(DEFAULT_PLOT)}; "
                                                "a temporary file with --smoke)")
    p.add_argument("--budget-s", type=float, default=420.0, help="wall-clock budget; later sections are skipped")
    p.add_argument("--video-runs", type=int, default=3, help="timed whole-video runs per mode")
    p.add_argument("--compile-backend", default=None,
                   help="torch.compile backend of fast mode (default inductor; aot_eager with --smoke on CPU)")
    p.add_argument("--compile-estimate-s", type=float, default=210.0,
                   help="budget reserved for fast mode's first call (compiles the UNet and the VAE decoder)")
    p.add_argument("--skip-video", action="store_true", help="no whole-video measurements")
    p.add_argument("--skip-sweep", action="store_true", help="no frame-count sweep / plot")
    return p


def main(argv=None) -> int:
    return main_with_args(build_arg_parser().parse_args(argv))


def main_with_args(args: argparse.Namespace) -> int:
    """Run with parsed arguments (``tfaa bench`` parses them with :func:`build_arg_parser`)."""
    if args.compile_backend is None:
        args.compile_backend = "aot_eager" if args.smoke and not torch.cuda.is_available() else "inductor"
    text = run(args)
    if args.results and not args.smoke:
        write_section(args.results, "bench_sampling", "## End-to-end sampling (bench_sampling.py)\n\n" + text)
        print(f"wrote section bench_sampling of {args.results}")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
