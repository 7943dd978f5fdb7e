"""Video-text data for training (thesis ch. 4.2-4.3).

- :mod:`.video_io`: decode mp4/webm/avi/gif/frame folders (``read_frames``);
- :mod:`.sampling`: first-N-frames-at-target-fps sampling, resize + center crop, [-1, 1] pixels;
- :mod:`.records` / :mod:`.layouts`: caption files (CSV/JSONL), UCF-101 and MSR-VTT layouts;
- :mod:`.dataset`: :class:`VideoTextDataset` (deterministic per ``(seed, epoch, index)``, skips and
  counts unreadable videos), :func:`collate_video_text`;
- :mod:`.latents`: encode once with the VAE, train from :class:`LatentDataset`;
- :mod:`.synthetic`: coloured shapes moving in captioned directions (tests, demo).
"""
from .dataset import SkipCounter, VideoTextDataset, choose_caption, collate_video_text, sample_rng
from .latents import LatentDataset, cache_latents, encode_pixels
from .layouts import camel_case_to_caption, msrvtt_records, ucf101_records
from .records import VideoRecord, read_caption_file, write_caption_jsonl
from .sampling import ClipTooShortError, clip_span, frames_to_tensor, sample_frame_indices
from .synthetic import make_synthetic_dataset, render_clip
from .video_io import VideoReadError, read_frames

__all__ = [
    "SkipCounter", "VideoTextDataset", "choose_caption", "collate_video_text", "sample_rng",
    "LatentDataset", "cache_latents", "encode_pixels",
    "camel_case_to_caption", "msrvtt_records", "ucf101_records",
    "VideoRecord", "read_caption_file", "write_caption_jsonl",
    "ClipTooShortError", "clip_span", "frames_to_tensor", "sample_frame_indices",
    "make_synthetic_dataset", "render_clip",
    "VideoReadError", "read_frames",
]
