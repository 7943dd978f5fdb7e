"""``tfaa demo``: a tiny text-to-video model trained and sampled end to end, no downloads.

Synthetic captioned clips (:mod:`.data`) -> a tiny pixel-space text-to-image model (:mod:`.models`,
:func:`.train.train_image_model`) -> inflated video UNets, temporal blocks trained with the image
weights frozen, full model and the "w/o TFAA" / "w/o temporal conv" ablations
(:func:`.train.train_video_model`) -> sampled videos (:mod:`.sampling`) -> a weights-free
temporal-consistency measure (:mod:`.measure`) -> GIFs, contact sheet, report (:mod:`.report`).
Python API: :func:`run_demo`.
"""
from .config import DEFAULT_PROMPTS, VARIANTS, DemoConfig, DemoConfigError, quick_overrides
from .output_dir import DemoOutputError
from .run import resolve_device, run_demo

__all__ = ["DemoConfig", "DemoConfigError", "DemoOutputError", "DEFAULT_PROMPTS", "VARIANTS", "quick_overrides",
           "resolve_device", "run_demo"]
