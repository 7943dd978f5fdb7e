"""One micro-batch's forward and backward (thesis eq. 3.9), eager or replayed from a CUDA graph.

Used by the trainer (:func:`tfaa.train.train`, ``train.cuda_graph``) and by
``benchmarks/bench_train.py``, so the benchmark times the step the trainer runs.

Why a graph: in the thesis' setting (SD1.4-size UNet, 32 frames at 32x32 latents) an eager training
step spends ~100 ms of host time (Python, autograd, ~10^4 kernel launches) beside ~120-200 ms of GPU
time; replaying the forward and backward from one CUDA graph pays that host time once, at capture.
"""
from __future__ import annotations

import contextlib
import logging
from typing import Callable, List, Optional

import torch

from .loss import diffusion_loss

__all__ = ["GradientStep"]

logger = logging.getLogger(__name__)


class GradientStep:
    """``loss = diffusion_loss(model, latents, text_emb, noise_scheduler, generator)``, then
    ``(loss / accumulation).backward()`` into the parameters' ``.grad``; a call returns the detached
    (unscaled) loss, a float32 scalar on the model's device, without a host sync.

    Args:
        model: the video UNet (or its accelerate/DDP wrapper), called as in :func:`diffusion_loss`.
        noise_scheduler: diffusers ``DDPMScheduler``.
        generator: draws the timesteps and the noise (a CUDA generator in graph mode).
        params: the trainable parameters (their ``.grad`` receive the gradients).
        accumulation: micro-batches per optimizer step; the loss is divided by it before backward.
        cuda_graph: replay the forward and backward from a CUDA graph (see below).
        autocast_dtype: run the loss under ``torch.autocast(device, autocast_dtype)`` (with the cast
            cache off in graph mode); None when the model applies its own (accelerate does).
        backward: eager only: ``backward(loss)`` (default ``loss.backward()``; the trainer passes
            ``accelerator.backward``).
        warmup: graph mode: eager calls on a side stream before the capture (Triton autotunes there).
        eager_on_capture_failure: graph mode: when the capture fails, log a warning and run every
            call eagerly (``cuda_graph`` becomes False) instead of raising.

    Graph mode (``cuda_graph=True``, CUDA, one process): the first call runs ``warmup`` eager calls
    on its inputs on a side stream inside :func:`tfaa_kernels.auto_for_cuda_graphs` (so
    ``backend="auto"`` takes the kernels that are fastest by GPU time), captures one call, and then
    puts back everything the warm-up changed: gradients zeroed, ``generator`` and the device's
    default CUDA generator at their states before the warm-up. Each call then copies its inputs into
    the graph's static buffers and replays (the first call's gradients start from zero: any present
    before it are discarded). The replay writes the same ``.grad`` tensors every time:
    with ``accumulation == 1`` it overwrites them (they are allocated during the captured backward,
    from the graph's pool, as eager would), with ``accumulation > 1`` it adds into them (allocated
    before the capture). Zero them in place between optimizer steps (:meth:`zero_grad`; needed when
    accumulating, and for the eager fallback) and never set them to None. ``generator`` is
    registered with the graph, so every replay draws fresh noise and advances it as an eager call
    would. A call whose input shapes differ from the captured ones runs eagerly (logged once). The
    model must not change between replays other than through its parameters' values (same modules,
    same backend). The backward is ``loss.backward()`` (the trainer's bf16/fp32 runs have no grad
    scaler, so accelerate's backward is the same call).
    """

    def __init__(self, model, noise_scheduler, generator: torch.Generator, params: List[torch.nn.Parameter],
                 accumulation: int = 1, cuda_graph: bool = False, autocast_dtype: Optional[torch.dtype] = None,
                 backward: Optional[Callable[[torch.Tensor], None]] = None, warmup: int = 3,
                 eager_on_capture_failure: bool = False):
        if accumulation < 1:
            raise ValueError(f"accumulation must be >= 1, got {accumulation}")
        if cuda_graph:
            if not torch.cuda.is_available():
                raise RuntimeError("cuda_graph=True needs a CUDA GPU")
            if generator.device.type != "cuda":
                raise ValueError(f"cuda_graph=True needs a CUDA generator, got one on {generator.device}")
            if warmup < 1:
                raise ValueError(f"warmup must be >= 1 in graph mode (Triton autotunes there), got {warmup}")
        self.model, self.noise_scheduler, self.generator = model, noise_scheduler, generator
        self.params = list(params)
        self.accumulation, self.cuda_graph, self.autocast_dtype = accumulation, cuda_graph, autocast_dtype
        self._eager_backward = backward
        self.warmup, self.eager_on_capture_failure = warmup, eager_on_capture_failure
        self._graph = None
        self._static = None  # (latents, text_emb, loss) of the captured call
        self._warned_shape = False

    # ------------------------------------------------------------------ public
    def __call__(self, latents: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
        """latents ``(B, F, 4, h, w)``, text_emb ``(B, 77, C)`` -> detached loss."""
        if not self.cuda_graph:
            return self._loss_and_backward(latents, text_emb)
        if self._graph is None:
            try:
                self._capture(latents, text_emb)
            except RuntimeError as exc:
                if not self.eager_on_capture_failure:
                    raise
                logger.warning("%s; running eager steps", exc)
                self.cuda_graph = False
                return self._loss_and_backward(latents, text_emb)
        s_lat, s_text, s_loss = self._static
        if latents.shape != s_lat.shape or text_emb.shape != s_text.shape:
            if not self._warned_shape:
                logger.warning("GradientStep: inputs %s / %s differ from the captured %s / %s; such calls run "
                               "eagerly", tuple(latents.shape), tuple(text_emb.shape), tuple(s_lat.shape),
                               tuple(s_text.shape))
                self._warned_shape = True
            return self._loss_and_backward(latents, text_emb)
        s_lat.copy_(latents)
        s_text.copy_(text_emb)
        self._graph.replay()
        return s_loss.clone()

    def zero_grad(self, optimizer: torch.optim.Optimizer) -> None:
        """After ``optimizer.step()``: eager, the gradients are freed (``set_to_none``); graph mode,
        zeroed in place (the graph writes those tensors)."""
        optimizer.zero_grad(set_to_none=not self.captured)

    @property
    def captured(self) -> bool:
        """Whether the CUDA graph exists (graph mode, after the first call)."""
        return self._graph is not None

    # ------------------------------------------------------------------ internals
    def _autocast(self, device: torch.device, cache: bool):
        if self.autocast_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.autocast_dtype, cache_enabled=cache)

    def _loss_and_backward(self, latents, text_emb, cache: bool = True) -> torch.Tensor:
        with self._autocast(latents.device, cache):
            loss = diffusion_loss(self.model, latents, text_emb, self.noise_scheduler, self.generator)
        scaled = loss / self.accumulation if self.accumulation > 1 else loss
        if self.cuda_graph or self._eager_backward is None:  # graph mode (warm-up, capture): plain autograd
            scaled.backward()
        else:
            self._eager_backward(scaled)
        return loss.detach().float()

    def _drop_grads(self) -> None:
        """accumulation == 1: the gradients to None (the captured backward allocates them)."""
        if self.accumulation == 1:
            for p in self.params:
                p.grad = None

    def _capture(self, latents, text_emb) -> None:
        import tfaa_kernels as tk

        device = latents.device
        if device.type != "cuda":
            raise ValueError(f"cuda_graph=True needs the inputs on a CUDA device, got {device}")
        s_lat, s_text = latents.detach().clone(), text_emb.detach().clone()
        # accumulation > 1: the graph adds into gradient tensors that exist before the capture.
        # accumulation == 1: the gradients are None at the capture, so the backward allocates them
        # from the graph's pool as it produces them (as eager): pre-allocated, all 1.2 GiB of them
        # (SD1.4 temporal modules, fp32) would sit beside the forward's activations at the peak
        for p in self.params:
            if self.accumulation > 1 and p.grad is None:
                p.grad = torch.zeros_like(p)
        gen_state = self.generator.get_state()
        default_state = torch.cuda.get_rng_state(device)
        graph = torch.cuda.CUDAGraph()
        default_gen = torch.cuda.default_generators[device.index if device.index is not None
                                                    else torch.cuda.current_device()]
        if self.generator is not default_gen:
            if not hasattr(graph, "register_generator_state"):
                raise RuntimeError("cuda_graph=True with a non-default CUDA generator needs "
                                   "torch.cuda.CUDAGraph.register_generator_state (PyTorch >= 2.5)")
            graph.register_generator_state(self.generator)
        try:
            with tk.auto_for_cuda_graphs():
                side = torch.cuda.Stream(device)
                side.wait_stream(torch.cuda.current_stream(device))
                with torch.cuda.stream(side):
                    for _ in range(self.warmup):
                        self._drop_grads()  # as at the capture (the warm-up's peak is the capture's)
                        self._loss_and_backward(s_lat, s_text, cache=False)
                torch.cuda.current_stream(device).wait_stream(side)
                torch.cuda.synchronize(device)
                self._drop_grads()
                torch.cuda.empty_cache()  # the warm-up's cached blocks: the graph gets its own pool
                self.generator.set_state(gen_state)
                with torch.cuda.graph(graph):
                    s_loss = self._loss_and_backward(s_lat, s_text, cache=False)
        except Exception as exc:
            _release_capture_rng(device, [self.generator, default_gen])
            raise RuntimeError(f"capturing the training step in a CUDA graph failed ({type(exc).__name__}: "
                               f"{str(exc).splitlines()[0]}); train without it (train.cuda_graph: false)") from exc
        finally:
            with torch.no_grad():  # the warm-up's gradients
                for p in self.params:
                    if p.grad is not None:
                        p.grad.zero_()
            self.generator.set_state(gen_state)
            torch.cuda.set_rng_state(default_state, device)
        self._graph, self._static = graph, (s_lat, s_text, s_loss)


def _release_capture_rng(device: torch.device, generators) -> None:
    """After a failed capture: the generators the graph registered (``generator`` and the default
    CUDA one) never saw the capture's end and would refuse eager draws ("Offset increment outside
    graph capture"); give each a fresh state object (seed and offset are restored by the caller)."""
    for gen in generators:
        if hasattr(gen, "graphsafe_set_state"):
            gen.graphsafe_set_state(torch.Generator(device=device).graphsafe_get_state())
