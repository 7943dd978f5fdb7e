"""The Fréchet distance between two Gaussians fitted to feature sets (the math of FID/FVD).

``d^2 = |mu1 - mu2|^2 + tr(S1 + S2 - 2 (S1 S2)^{1/2})``.

``tr((S1 S2)^{1/2})`` is computed without a general matrix square root: ``S1 S2`` is similar to
the symmetric PSD matrix ``A = S1^{1/2} S2 S1^{1/2}``, so it is the sum of the square roots of
``A``'s eigenvalues (clipped at 0). Everything runs in float64 numpy; it agrees with the
``scipy.linalg.sqrtm`` formula of the reference FID/FVD code (tested).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

__all__ = ["feature_statistics", "frechet_distance", "frechet_distance_from_features"]


def feature_statistics(features) -> Tuple[np.ndarray, np.ndarray]:
    """``(N, D)`` features -> ``(mu (D,), sigma (D, D))``, the mean and unbiased covariance (float64).
    Needs ``N >= 2``."""
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"features must be (N, D) with N >= 2, got shape {x.shape}")
    return x.mean(axis=0), np.cov(x, rowvar=False)


def _sym_sqrt(s: np.ndarray) -> np.ndarray:
    w, v = np.linalg.eigh((s + s.T) / 2)
    return (v * np.sqrt(np.clip(w, 0, None))) @ v.T


def frechet_distance(mu1, sigma1, mu2, sigma2) -> float:
    """Squared Fréchet distance between ``N(mu1, sigma1)`` and ``N(mu2, sigma2)`` (FVD/FID value)."""
    mu1, mu2 = np.atleast_1d(np.asarray(mu1, np.float64)), np.atleast_1d(np.asarray(mu2, np.float64))
    s1, s2 = np.atleast_2d(np.asarray(sigma1, np.float64)), np.atleast_2d(np.asarray(sigma2, np.float64))
    if mu1.shape != mu2.shape or s1.shape != s2.shape or s1.shape != (mu1.size, mu1.size):
        raise ValueError(f"shape mismatch: mu {mu1.shape} vs {mu2.shape}, sigma {s1.shape} vs {s2.shape}")
    r = _sym_sqrt(s1)
    a = r @ s2 @ r
    tr_covmean = np.sqrt(np.clip(np.linalg.eigvalsh((a + a.T) / 2), 0, None)).sum()
    diff = mu1 - mu2
    return float(diff @ diff + np.trace(s1) + np.trace(s2) - 2.0 * tr_covmean)


def frechet_distance_from_features(feats1, feats2) -> float:
    """Fréchet distance between the Gaussians fitted to two ``(N, D)`` feature sets."""
    return frechet_distance(*feature_statistics(feats1), *feature_statistics(feats2))
