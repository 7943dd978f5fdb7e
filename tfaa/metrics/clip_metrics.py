"""CLIP-based video metrics of the thesis' Table 5.3.

- **Frame consistency**: the mean cosine similarity between the CLIP image embeddings of
  consecutive frames, ``mean_f cos(e_f, e_{f+1})`` (averaged over videos).
- **CLIPSIM**: the mean over frames of the cosine similarity between the frame's CLIP image
  embedding and the prompt's CLIP text embedding (raw cosine, no x100 — the thesis' 0.29 scale).

:class:`ClipScorer` loads a ``transformers`` ``CLIPModel`` and its tokenizer from a local folder
(e.g. a copy of ``openai/clip-vit-large-patch14``; nothing is downloaded), and preprocesses
frames in torch the way ``CLIPImageProcessor`` does: shorter side to ``image_size`` (bicubic),
center crop, normalise with the model's mean/std (from ``preprocessor_config.json`` when present).
"""
from __future__ import annotations

import json
import os
from typing import List, Optional, Sequence

import torch
import torch.nn.functional as F

__all__ = ["ClipScorer", "frame_consistency_from_embeddings", "clipsim_from_embeddings"]

_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def frame_consistency_from_embeddings(image_emb: torch.Tensor) -> torch.Tensor:
    """``(B, F, D)`` frame embeddings -> ``(B,)`` mean cosine similarity of consecutive frames (F >= 2)."""
    if image_emb.ndim != 3 or image_emb.shape[1] < 2:
        raise ValueError(f"need (B, F, D) embeddings with F >= 2, got {tuple(image_emb.shape)}")
    e = F.normalize(image_emb.float(), dim=-1)
    return (e[:, 1:] * e[:, :-1]).sum(-1).mean(1)


def clipsim_from_embeddings(image_emb: torch.Tensor, text_emb: torch.Tensor) -> torch.Tensor:
    """``(B, F, D)`` frame embeddings and ``(B, D)`` text embeddings -> ``(B,)`` mean frame-text cosine."""
    if image_emb.ndim != 3 or text_emb.shape != (image_emb.shape[0], image_emb.shape[2]):
        raise ValueError(f"need (B, F, D) and (B, D), got {tuple(image_emb.shape)} and {tuple(text_emb.shape)}")
    e = F.normalize(image_emb.float(), dim=-1)
    t = F.normalize(text_emb.float(), dim=-1)
    return (e * t[:, None]).sum(-1).mean(1)


class ClipScorer:
    """CLIP embeddings and the two metrics. Build with :meth:`from_pretrained` (a local folder) or
    directly from a ``CLIPModel`` and ``CLIPTokenizer`` (tests use tiny random ones)."""

    def __init__(self, model, tokenizer, image_size: Optional[int] = None, mean: Sequence[float] = _CLIP_MEAN,
                 std: Sequence[float] = _CLIP_STD, device: str = "cpu", batch_size: int = 32) -> None:
        self.model = model.eval().to(device)
        self.tokenizer = tokenizer
        self.device, self.batch_size = torch.device(device), batch_size
        self.image_size = image_size or model.config.vision_config.image_size
        self.mean = torch.tensor(mean, device=self.device).view(1, 3, 1, 1)
        self.std = torch.tensor(std, device=self.device).view(1, 3, 1, 1)

    @classmethod
    def from_pretrained(cls, path: str, device: str = "cpu", **kwargs) -> "ClipScorer":
        """Load ``CLIPModel`` + ``CLIPTokenizer`` from a local folder (no network)."""
        from transformers import CLIPModel, CLIPTokenizer

        if not os.path.isdir(path):
            raise FileNotFoundError(f"CLIP model folder {path!r} does not exist (give a local copy; nothing is downloaded)")
        model = CLIPModel.from_pretrained(path, local_files_only=True)
        tokenizer = CLIPTokenizer.from_pretrained(path, local_files_only=True)
        pre = os.path.join(path, "preprocessor_config.json")
        if os.path.isfile(pre):
            with open(pre, encoding="utf-8") as fh:
                cfg = json.load(fh)
            kwargs.setdefault("mean", cfg.get("image_mean", _CLIP_MEAN))
            kwargs.setdefault("std", cfg.get("image_std", _CLIP_STD))
            crop = cfg.get("crop_size")
            if isinstance(crop, dict):
                crop = crop.get("height")
            if crop:
                kwargs.setdefault("image_size", int(crop))
        return cls(model, tokenizer, device=device, **kwargs)

    def preprocess(self, frames: torch.Tensor) -> torch.Tensor:
        """``(N, 3, H, W)`` in [-1, 1] -> ``(N, 3, S, S)`` CLIP-normalised (S = ``image_size``)."""
        x = (frames.to(self.device, torch.float32) + 1) / 2
        h, w = x.shape[-2:]
        s = self.image_size
        scale = s / min(h, w)
        nh, nw = max(s, round(h * scale)), max(s, round(w * scale))
        x = F.interpolate(x, size=(nh, nw), mode="bicubic", align_corners=False, antialias=True).clamp(0, 1)
        top, left = (nh - s) // 2, (nw - s) // 2
        x = x[:, :, top:top + s, left:left + s]
        return (x - self.mean) / self.std

    @torch.no_grad()
    def image_embeddings(self, videos: torch.Tensor) -> torch.Tensor:
        """``(B, F, 3, H, W)`` in [-1, 1] -> ``(B, F, D)`` projected CLIP image embeddings."""
        b, f = videos.shape[:2]
        flat = videos.reshape(b * f, *videos.shape[2:])
        outs = []
        for i in range(0, flat.shape[0], self.batch_size):
            px = self.preprocess(flat[i:i + self.batch_size])
            vis = self.model.vision_model(pixel_values=px)
            outs.append(self.model.visual_projection(vis.pooler_output).float().cpu())
        return torch.cat(outs).reshape(b, f, -1)

    @torch.no_grad()
    def text_embeddings(self, texts: List[str]) -> torch.Tensor:
        """``B`` prompts -> ``(B, D)`` projected CLIP text embeddings (truncated to the model's length)."""
        tok = self.tokenizer(list(texts), padding="max_length", truncation=True,
                             max_length=self.model.config.text_config.max_position_embeddings, return_tensors="pt")
        out = self.model.text_model(input_ids=tok.input_ids.to(self.device),
                                    attention_mask=tok.attention_mask.to(self.device))
        return self.model.text_projection(out.pooler_output).float().cpu()

    def frame_consistency(self, videos: torch.Tensor) -> torch.Tensor:
        """``(B, F, 3, H, W)`` -> ``(B,)`` frame consistency per video."""
        return frame_consistency_from_embeddings(self.image_embeddings(videos))

    def clipsim(self, videos: torch.Tensor, prompts: List[str]) -> torch.Tensor:
        """``(B, F, 3, H, W)`` and ``B`` prompts -> ``(B,)`` CLIPSIM per video."""
        if len(prompts) != videos.shape[0]:
            raise ValueError(f"need one prompt per video: {len(prompts)} prompts, {videos.shape[0]} videos")
        return clipsim_from_embeddings(self.image_embeddings(videos), self.text_embeddings(prompts))
