"""``TFAAPipeline``: text-to-video sampling with the video UNet (a diffusers DiffusionPipeline).

Frames are generated jointly as ``B*F`` latents (row ``b*F + f``) by a :class:`~tfaa.models.VideoUNet`;
each prompt's text embedding is repeated for its ``F`` frames. Classifier-free guidance runs the
unconditional and conditional halves in one batched UNet call per step.
"""
from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Union

import torch
from diffusers import AutoencoderKL, DDIMScheduler, DiffusionPipeline
from diffusers.schedulers.scheduling_utils import SchedulerMixin
from diffusers.utils import BaseOutput
from diffusers.utils.torch_utils import randn_tensor
from transformers import CLIPTextModel, CLIPTokenizer

from .models import VideoUNet

OUTPUT_TYPES = ("np", "pt", "pil", "latent")


@dataclass
class TFAAPipelineOutput(BaseOutput):
    """``frames``: ``"np"``: float32 array ``(B, F, H, W, 3)`` in [0, 1]; ``"pt"``: tensor
    ``(B, F, 3, H, W)`` in [0, 1]; ``"pil"``: ``B`` lists of ``F`` PIL images;
    ``"latent"``: tensor ``(B, F, 4, h, w)`` (unscaled latents as the UNet sees them)."""

    frames: Any


def _to_host(video: torch.Tensor) -> torch.Tensor:
    """``video`` on the CPU. From a GPU through page-locked memory (torch's caching host allocator
    reuses the buffer across calls): a plain ``.cpu()`` of a 16-frame 512 px video (50 MB of fp32)
    stages through pageable memory and touches a fresh buffer's pages on every call."""
    if video.device.type != "cuda":
        return video.cpu()
    host = torch.empty(video.shape, dtype=video.dtype, pin_memory=True)
    host.copy_(video, non_blocking=True)
    torch.cuda.current_stream(video.device).synchronize()
    return host


class TFAAPipeline(DiffusionPipeline):
    """Text-to-video pipeline: ``vae``, ``text_encoder``, ``tokenizer``, ``unet`` (a VideoUNet),
    ``scheduler`` (DDIM by default in :meth:`from_sd`; any diffusers scheduler works)."""

    model_cpu_offload_seq = "text_encoder->unet->vae"
    _callback_tensor_inputs = ["latents", "prompt_embeds"]

    def __init__(self, vae: AutoencoderKL, text_encoder: CLIPTextModel, tokenizer: CLIPTokenizer,
                 unet: VideoUNet, scheduler: SchedulerMixin):
        super().__init__()
        self.register_modules(vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet,
                              scheduler=scheduler)
        self.vae_scale_factor = 2 ** (len(self.vae.config.block_out_channels) - 1)

    # ------------------------------------------------------------------ loading
    @classmethod
    def from_sd(cls, model_dir: Union[str, os.PathLike], temporal_weights: Optional[str] = None,
                scheduler: str = "ddim", torch_dtype: Optional[torch.dtype] = None,
                **video_unet_kwargs) -> "TFAAPipeline":
        """Build the pipeline from a local diffusers directory: an SD 1.x pipeline (its 2D UNet is
        inflated) or a saved TFAAPipeline (its VideoUNet is loaded).

        Args:
            model_dir: directory with ``vae/``, ``text_encoder/``, ``tokenizer/``, ``unet/``, ``scheduler/``.
            temporal_weights: optional file/directory for :meth:`VideoUNet.load_temporal_weights`.
            scheduler: ``"ddim"`` (default: DDIM from the saved scheduler's config) or ``"model"``
                (the saved scheduler as is).
            torch_dtype: dtype of all models (fp32 when None).
            video_unet_kwargs: temporal arguments of :class:`VideoUNet` when inflating a 2D UNet.
        """
        from diffusers import UNet2DConditionModel

        model_dir = os.fspath(model_dir)
        if not os.path.isdir(model_dir):
            raise FileNotFoundError(f"model directory {model_dir!r} does not exist")
        for sub in ("vae", "text_encoder", "tokenizer", "unet", "scheduler"):
            if not os.path.isdir(os.path.join(model_dir, sub)):
                raise FileNotFoundError(f"model directory {model_dir!r} has no {sub}/ subfolder "
                                        "(a diffusers SD 1.x pipeline directory is expected)")
        if scheduler not in ("ddim", "model"):
            raise ValueError(f"scheduler must be 'ddim' or 'model', got {scheduler!r}")
        unet_config = UNet2DConditionModel.load_config(model_dir, subfolder="unet")
        if "unet_config" in unet_config:
            unet = VideoUNet.from_pretrained(model_dir, subfolder="unet", torch_dtype=torch_dtype)
        else:
            unet2d = UNet2DConditionModel.from_pretrained(model_dir, subfolder="unet", torch_dtype=torch_dtype)
            unet = VideoUNet.from_unet2d(unet2d, **video_unet_kwargs)
            del unet2d
        if temporal_weights is not None:
            unet.load_temporal_weights(temporal_weights)
        saved_scheduler = DDIMScheduler.load_config(model_dir, subfolder="scheduler")
        if scheduler == "ddim":
            sched = DDIMScheduler.from_config(saved_scheduler)
        else:
            import diffusers

            sched = getattr(diffusers, saved_scheduler["_class_name"]).from_config(saved_scheduler)
        return cls(
            vae=AutoencoderKL.from_pretrained(model_dir, subfolder="vae", torch_dtype=torch_dtype),
            text_encoder=CLIPTextModel.from_pretrained(model_dir, subfolder="text_encoder", dtype=torch_dtype),
            tokenizer=CLIPTokenizer.from_pretrained(model_dir, subfolder="tokenizer"),
            unet=unet, scheduler=sched)

    def enable_fast_sampling(self, **kwargs):
        """Fast sampling mode (fused QKV, channels_last, fullgraph torch.compile of the UNet with
        CUDA graphs on CUDA); results equal normal sampling up to bf16 tolerance. Call after
        ``.to(device, dtype)``. ``kwargs``: see :func:`tfaa.fast.enable_fast_sampling`.
        Returns the applied :class:`tfaa.fast.FastSamplingConfig`."""
        from .fast import enable_fast_sampling

        return enable_fast_sampling(self, **kwargs)

    # ------------------------------------------------------------------ steps
    @torch.no_grad()
    def encode_prompt(self, prompt: List[str], device) -> torch.Tensor:
        """``(len(prompt), max_length, C_text)`` CLIP last hidden states."""
        tokens = self.tokenizer(prompt, padding="max_length", max_length=self.tokenizer.model_max_length,
                                truncation=True, return_tensors="pt")
        return self.text_encoder(tokens.input_ids.to(device))[0]

    def check_inputs(self, prompt, negative_prompt, num_frames, height, width, num_inference_steps,
                     guidance_scale, decode_chunk_size, output_type, latents, callback_on_step_end_tensor_inputs):
        """Raise ``ValueError``/``TypeError`` naming the argument and the rule it breaks."""
        if isinstance(prompt, str):
            prompt = [prompt]
        if not isinstance(prompt, list) or not prompt or not all(isinstance(p, str) for p in prompt):
            raise TypeError(f"prompt must be a string or a non-empty list of strings, got {prompt!r}")
        if negative_prompt is not None and not isinstance(negative_prompt, str):
            if not isinstance(negative_prompt, list) or not all(isinstance(p, str) for p in negative_prompt):
                raise TypeError("negative_prompt must be None, a string or a list of strings")
            if len(negative_prompt) != len(prompt):
                raise ValueError(f"negative_prompt has {len(negative_prompt)} entries but prompt has "
                                 f"{len(prompt)}; give one negative prompt per prompt (or a single string)")
        if not isinstance(num_frames, int) or num_frames < 1:
            raise ValueError(f"num_frames must be an integer >= 1, got {num_frames!r}")
        for name, value in (("height", height), ("width", width)):
            if not isinstance(value, int) or value <= 0 or value % self.vae_scale_factor != 0:
                raise ValueError(f"{name} must be a positive multiple of {self.vae_scale_factor} "
                                 f"(the VAE's downsampling factor), got {value!r}")
        if not isinstance(num_inference_steps, int) or num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be an integer >= 1, got {num_inference_steps!r}")
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        if not isinstance(decode_chunk_size, int) or decode_chunk_size < 1:
            raise ValueError(f"decode_chunk_size must be an integer >= 1, got {decode_chunk_size!r}")
        if output_type not in OUTPUT_TYPES:
            raise ValueError(f"output_type must be one of {OUTPUT_TYPES}, got {output_type!r}")
        bad = [k for k in callback_on_step_end_tensor_inputs if k not in self._callback_tensor_inputs]
        if bad:
            raise ValueError(f"callback_on_step_end_tensor_inputs {bad} not in {self._callback_tensor_inputs}")
        if latents is not None:
            h, w = height // self.vae_scale_factor, width // self.vae_scale_factor
            c = self.unet.in_channels
            ok = (len(prompt), num_frames, c, h, w)
            if tuple(latents.shape) not in (ok, (ok[0] * num_frames, c, h, w)):
                raise ValueError(f"latents must have shape {ok} or {(ok[0] * num_frames, c, h, w)}, "
                                 f"got {tuple(latents.shape)}")

    def prepare_latents(self, batch: int, num_frames: int, height: int, width: int, dtype, device,
                        generator, latents=None) -> torch.Tensor:
        """Initial noise ``(B*F, C, h, w)`` frame-major, scaled by the scheduler's init sigma."""
        shape = (batch, num_frames, self.unet.in_channels, height // self.vae_scale_factor,
                 width // self.vae_scale_factor)
        if latents is None:
            latents = randn_tensor(shape, generator=generator, device=device, dtype=dtype)
        latents = latents.to(device=device, dtype=dtype).reshape(batch * num_frames, *shape[2:])
        return latents * self.scheduler.init_noise_sigma

    @torch.no_grad()
    def decode_latents(self, latents: torch.Tensor, decode_chunk_size: int) -> torch.Tensor:
        """``(N, 4, h, w)`` latents -> ``(N, 3, H, W)`` images in [0, 1], ``decode_chunk_size`` frames at a time."""
        latents = latents / self.vae.config.scaling_factor
        frames = [self.vae.decode(latents[i:i + decode_chunk_size].to(self.vae.dtype)).sample
                  for i in range(0, latents.shape[0], decode_chunk_size)]
        return (torch.cat(frames) / 2 + 0.5).clamp(0, 1).float()

    def _step_kwargs(self, generator, eta):
        params = set(inspect.signature(self.scheduler.step).parameters)
        kwargs = {}
        if "eta" in params:
            kwargs["eta"] = eta
        if "generator" in params:
            kwargs["generator"] = generator
        return kwargs

    # ------------------------------------------------------------------ call
    @torch.no_grad()
    def __call__(
        self,
        prompt: Union[str, List[str]],
        num_frames: int = 16,
        height: Optional[int] = None,
        width: Optional[int] = None,
        num_inference_steps: int = 25,
        guidance_scale: float = 7.5,
        negative_prompt: Optional[Union[str, List[str]]] = None,
        generator: Optional[Union[torch.Generator, List[torch.Generator]]] = None,
        seed: Optional[int] = None,
        latents: Optional[torch.Tensor] = None,
        eta: float = 0.0,
        output_type: str = "np",
        decode_chunk_size: int = 16,
        callback_on_step_end: Optional[Callable[["TFAAPipeline", int, Any, Dict], Dict]] = None,
        callback_on_step_end_tensor_inputs: List[str] = ("latents",),
        return_dict: bool = True,
    ):
        """Generate ``len(prompt)`` videos of ``num_frames`` frames.

        Args:
            prompt: a string or a list of strings (one video each).
            num_frames: frames per video, >= 1.
            height, width: pixels, multiples of 8 (default: UNet sample_size * 8).
            num_inference_steps: scheduler steps. guidance_scale: CFG weight (<= 1: no guidance).
            negative_prompt: a string, or one string per prompt (default: empty prompt).
            generator / seed: noise source (``seed`` makes a CPU generator; same video on any device).
            latents: initial noise ``(B, F, 4, h, w)`` or ``(B*F, 4, h, w)`` instead of sampling it.
            eta: DDIM eta. output_type: ``"np"``, ``"pt"``, ``"pil"`` or ``"latent"``.
            decode_chunk_size: frames per VAE decode call (default 16, as AnimateDiffPipeline). It sets
                the video's peak memory: a 16-frame 512 px bf16 video on an H100 peaked 5.0 GiB above the
                weights in one chunk against 2.5 GiB in 8-frame chunks (fast mode; 8.0 vs 4.0 GiB
                normal), and decoded in 107 ms against 139 ms with fast mode's compiled decoder.
            callback_on_step_end: ``fn(pipe, step, timestep, {name: tensor}) -> dict`` after each step;
                returned ``"latents"`` replace the current ones.
            callback_on_step_end_tensor_inputs: names passed to the callback (``"latents"``, ``"prompt_embeds"``).

        Returns: :class:`TFAAPipelineOutput` (or ``(frames,)`` when ``return_dict=False``).
        """
        default = self.unet.unet.config.sample_size * self.vae_scale_factor
        height = default if height is None else height
        width = default if width is None else width
        callback_on_step_end_tensor_inputs = list(callback_on_step_end_tensor_inputs)
        self.check_inputs(prompt, negative_prompt, num_frames, height, width, num_inference_steps,
                          guidance_scale, decode_chunk_size, output_type, latents,
                          callback_on_step_end_tensor_inputs)
        prompts = [prompt] if isinstance(prompt, str) else list(prompt)
        batch = len(prompts)
        device = self._execution_device
        do_cfg = guidance_scale > 1.0
        if generator is None and seed is not None:
            generator = torch.Generator("cpu").manual_seed(seed)

        prompt_embeds = self.encode_prompt(prompts, device)
        if do_cfg:
            negatives = [negative_prompt or ""] * batch if not isinstance(negative_prompt, list) else negative_prompt
            prompt_embeds = torch.cat([self.encode_prompt(negatives, device), prompt_embeds])
        prompt_embeds = prompt_embeds.to(self.unet.dtype).repeat_interleave(num_frames, dim=0)

        self.scheduler.set_timesteps(num_inference_steps, device=device)
        latents = self.prepare_latents(batch, num_frames, height, width, self.unet.dtype, device,
                                       generator, latents)
        step_kwargs = self._step_kwargs(generator, eta)

        timesteps = self.scheduler.timesteps
        # The scheduler gets each timestep as a host scalar: schedulers index host tables with it and
        # branch on it (DDIM: ``alphas_cumprod[t]``, ``if prev_t >= 0``), which with a device tensor
        # waits for the GPU at every step, so the host could not queue step i+1 while step i runs.
        # The UNet keeps the device tensor (a compiled UNet would specialise on a Python int).
        with self.progress_bar(total=len(timesteps)) as progress:
            for i, (t, t_host) in enumerate(zip(timesteps, timesteps.cpu())):
                model_in = torch.cat([latents] * 2) if do_cfg else latents
                model_in = self.scheduler.scale_model_input(model_in, t_host)
                noise = self.unet(model_in, t, prompt_embeds, num_frames=num_frames, return_dict=False)[0]
                if do_cfg:
                    uncond, cond = noise.chunk(2)
                    noise = uncond + guidance_scale * (cond - uncond)
                latents = self.scheduler.step(noise, t_host, latents, **step_kwargs, return_dict=False)[0]
                if callback_on_step_end is not None:
                    local = {"latents": latents, "prompt_embeds": prompt_embeds}
                    out = callback_on_step_end(self, i, t, {k: local[k] for k in callback_on_step_end_tensor_inputs})
                    latents = (out or {}).get("latents", latents)
                progress.update()

        if output_type == "latent":
            frames = latents.reshape(batch, num_frames, *latents.shape[1:])
        else:
            video = self.decode_latents(latents, decode_chunk_size)
            video = _to_host(video.reshape(batch, num_frames, *video.shape[1:]))
            if output_type == "pt":
                frames = video
            else:
                frames = video.permute(0, 1, 3, 4, 2).numpy()
                if output_type == "pil":
                    frames = [self.numpy_to_pil(clip) for clip in frames]
        self.maybe_free_model_hooks()
        return TFAAPipelineOutput(frames=frames) if return_dict else (frames,)
