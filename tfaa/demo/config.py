"""The demo's settings: one dataclass, checked before any work, with a ``--quick`` preset for tests."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Dict, Tuple

__all__ = ["DemoConfig", "DemoConfigError", "quick_overrides", "DEFAULT_PROMPTS", "VARIANTS", "NUM_TRAIN_TIMESTEPS"]

#: length of the demo's noise schedule (tfaa.demo.models.noise_scheduler)
NUM_TRAIN_TIMESTEPS = 1000

#: one prompt per direction, every colour and shape of the demo set once or more
DEFAULT_PROMPTS = ("a red circle moving right", "a green square moving left",
                   "a blue circle moving up", "a yellow square moving down")

#: the video models trained and compared: name -> VideoUNet switches (thesis Table 5.4 at toy scale)
VARIANTS: Dict[str, Dict[str, bool]] = {
    "full": dict(use_tfaa=True, use_temporal_conv=True),
    "w/o TFAA": dict(use_tfaa=False, use_temporal_conv=True),
    "w/o temporal conv": dict(use_tfaa=True, use_temporal_conv=False),
}


class DemoConfigError(ValueError):
    """A demo setting out of range; the message names the setting and the rule."""


@dataclass
class DemoConfig:
    """Everything that determines the demo's results (stored in the output folder, compared on resume).

    Data: every combination of ``colors`` x ``shapes`` x ``directions`` is one clip of
    ``num_frames`` frames of ``size`` x ``size`` pixels (:func:`tfaa.data.synthetic.render_clip`).
    Models: a pixel-space UNet on 2x2 space-to-depth pixels (``size/2`` x ``size/2`` x 12) conditioned
    on a tiny CLIP text encoder (random and frozen by default) is the image stage; the UNet is then
    inflated and its temporal blocks trained.
    """

    seed: int = 0
    # data
    colors: Tuple[str, ...] = ("red", "green", "blue", "yellow")
    shapes: Tuple[str, ...] = ("circle", "square")
    directions: Tuple[str, ...] = ("left", "right", "up", "down")
    num_frames: int = 8
    #: 24 px (12 x 12 packed pixels): ~0.55x the CPU time of a step at 32 px, which bought the
    #: training steps that make the temporal blocks learn the direction within the CPU budget
    size: int = 24
    #: faint trailing copies behind each shape (motion blur, :func:`tfaa.data.synthetic.render_clip`):
    #: without it a single frame of "moving left" and "moving right" look the same, so the frozen
    #: image model's features carry no sign of the motion; in GPU trials the temporal blocks then
    #: learned the axis of motion but not its direction (README, "The demo")
    motion_blur: int = 3
    #: where each clip's path starts, in units of its travel from the frame centre
    #: (:func:`tfaa.data.synthetic.render_clip`). -0.5 centres every path: then "moving up" and
    #: "moving down" clips cover the same positions, only the faint trail tells them apart, and the
    #: temporal blocks often learned a caption's axis with the wrong sign (time-reversed videos).
    #: -0.25 (default): the later frames lie on the side of the captioned direction. GPU trials,
    #: full model, image-model seeds 0-7, 16 videos each: direction agreement 0.85-1.00 (mean 0.97)
    #: vs 0.38-0.99 (mean 0.81) with centred paths
    path_start: float = -0.25
    # image stage
    steps_image: int = 3000
    batch_image: int = 32
    lr_image: float = 2e-3
    #: train the text encoder jointly with the image UNet (True), or keep it frozen at its random
    #: initialisation (False, default; SD's CLIP text encoder is frozen too). Trained jointly, the image
    #: model often ignored a direction word: GPU trials, image-model seeds 0-7 twice, images sampled per
    #: prompt, mean position along the captioned direction (real frames 0.125 frame widths): 8 of 16
    #: models had a direction near 0 or reversed (< 0.05), and their videos went the wrong way
    #: (full-model direction agreement 0.30 and 0.43 for two seeds); frozen: 4 of 16, full-model
    #: agreement 0.83-1.00 (mean 0.96) over seeds 0-15 (benchmarks/RESULTS.md, "Session 5")
    train_text_encoder: bool = False
    # video stage (each of the 3 variants)
    steps_video: int = 1200
    batch_video: int = 4
    lr_video: float = 3e-3
    #: the video stage draws its timesteps from [video_min_timestep, 1000): below it the noisy
    #: frames already fix where the shape is, so there is nothing temporal left to learn. GPU
    #: trials at 24 px, full model, direction agreement over image-model seeds: all timesteps
    #: 0.43-0.80 (mean 0.56, seeds 0-3, 1000 video steps), >= 400: 0.52-0.90 (0.70); with 1400
    #: video steps, seeds 0-5: >= 400 mean 0.65, >= 600 mean 0.71
    video_min_timestep: int = 600
    caption_dropout: float = 0.1
    # model size
    channels: Tuple[int, ...] = (32, 64)
    conv_num_layers: int = 2
    #: TFAA over all tokens of frames i-1 and 1 ("spatial", the sparse-causal reading of eq. 3.14):
    #: a token can follow the shape to where it was in the previous frame, which per-token
    #: "temporal" attention cannot
    tfaa_mode: str = "spatial"
    # sampling
    prompts: Tuple[str, ...] = DEFAULT_PROMPTS
    samples_per_prompt: int = 2
    sample_steps: int = 25
    guidance_scale: float = 3.0

    def validate(self) -> "DemoConfig":
        """Raise :class:`DemoConfigError` naming the first bad setting; returns ``self``."""
        from tfaa.data.synthetic import COLORS, DIRECTIONS, PATH_START_RANGE, SHAPES

        for name, values, allowed in (("colors", self.colors, tuple(COLORS)), ("shapes", self.shapes, SHAPES),
                                      ("directions", self.directions, tuple(DIRECTIONS))):
            if not values:
                raise DemoConfigError(f"{name} must not be empty")
            bad = [v for v in values if v not in allowed]
            if bad:
                raise DemoConfigError(f"{name}: {bad} not among {allowed}")
        ints = dict(num_frames=(self.num_frames, 2), size=(self.size, 16), steps_image=(self.steps_image, 1),
                    batch_image=(self.batch_image, 1), steps_video=(self.steps_video, 1),
                    batch_video=(self.batch_video, 1), samples_per_prompt=(self.samples_per_prompt, 1),
                    sample_steps=(self.sample_steps, 1), conv_num_layers=(self.conv_num_layers, 1),
                    motion_blur=(self.motion_blur, 0), video_min_timestep=(self.video_min_timestep, 0))
        for name, (value, lo) in ints.items():
            if not isinstance(value, int) or value < lo:
                raise DemoConfigError(f"{name} must be an integer >= {lo}, got {value!r}")
        if self.video_min_timestep >= NUM_TRAIN_TIMESTEPS:
            raise DemoConfigError(f"video_min_timestep must be < {NUM_TRAIN_TIMESTEPS} (the schedule's length), "
                                  f"got {self.video_min_timestep}")
        from tfaa.models.tfaa_block import TFAA_MODES

        if self.tfaa_mode not in TFAA_MODES:
            raise DemoConfigError(f"tfaa_mode must be one of {TFAA_MODES}, got {self.tfaa_mode!r}")
        levels = len(self.channels)
        if self.size % (2 ** levels) != 0:
            raise DemoConfigError(f"size must be a multiple of {2 ** levels} (2x2 pixel packing and "
                                  f"{levels - 1} UNet downsamplings), got {self.size}")
        if not self.channels or any(c % 16 for c in self.channels):
            raise DemoConfigError(f"channels must be multiples of 16 (GroupNorm groups), got {self.channels}")
        lo, hi = PATH_START_RANGE
        if not isinstance(self.path_start, (int, float)) or not lo <= self.path_start <= hi:
            raise DemoConfigError(f"path_start must be in [{lo}, {hi}] (the shape stays inside the frame), "
                                  f"got {self.path_start!r}")
        if not 0.0 <= self.caption_dropout < 1.0:
            raise DemoConfigError(f"caption_dropout must be in [0, 1), got {self.caption_dropout}")
        for name in ("lr_image", "lr_video"):
            if getattr(self, name) <= 0:
                raise DemoConfigError(f"{name} must be > 0, got {getattr(self, name)}")
        if self.guidance_scale < 0:
            raise DemoConfigError(f"guidance_scale must be >= 0, got {self.guidance_scale}")
        if not self.prompts:
            raise DemoConfigError("prompts must not be empty")
        for p in self.prompts:
            words = p.split()
            if len(words) != 5 or words[0] != "a" or words[3] != "moving" or words[1] not in self.colors \
                    or words[2] not in self.shapes or words[4] not in self.directions:
                raise DemoConfigError(f"prompt {p!r} must read 'a <color> <shape> moving <direction>' with "
                                      f"color in {self.colors}, shape in {self.shapes}, direction in "
                                      f"{self.directions} (the measure tracks that colour along that direction)")
        return self

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @classmethod
    def from_dict(cls, data: dict) -> "DemoConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - names)
        if unknown:
            raise DemoConfigError(f"unknown demo settings {unknown}")
        return cls(**{k: (tuple(v) if isinstance(v, list) else v) for k, v in data.items()})


def quick_overrides() -> Dict[str, object]:
    """The ``--quick`` preset (tests, smoke runs: seconds, not a usable model)."""
    return dict(colors=("red", "blue"), shapes=("square",), directions=("left", "right"), num_frames=4,
                size=16, steps_image=6, batch_image=8, steps_video=3, batch_video=2, channels=(16, 32),
                conv_num_layers=1, prompts=("a red square moving right", "a blue square moving left"),
                samples_per_prompt=1, sample_steps=3)
