"""Evaluation metrics of the thesis (ch. 4.4, Tables 5.2-5.4).

- :mod:`.clip_metrics`: frame consistency and CLIPSIM from a local CLIP model (:class:`ClipScorer`);
- :mod:`.fvd` / :mod:`.i3d`: FVD from I3D features (:class:`I3DFeatureExtractor`: a state dict for the
  torch :class:`InceptionI3d` here, or a TorchScript file);
- :mod:`.frechet`: the Fréchet distance;
- :mod:`.evaluate`: :func:`evaluate` over folders / caption files (``tfaa eval``).
"""
from .clip_metrics import ClipScorer, clipsim_from_embeddings, frame_consistency_from_embeddings
from .evaluate import METRICS, evaluate, records_from_path
from .frechet import feature_statistics, frechet_distance, frechet_distance_from_features
from .fvd import I3DFeatureExtractor, compute_fvd, fvd_from_features
from .i3d import InceptionI3d

__all__ = ["ClipScorer", "clipsim_from_embeddings", "frame_consistency_from_embeddings", "METRICS", "evaluate",
           "records_from_path", "feature_statistics", "frechet_distance", "frechet_distance_from_features",
           "I3DFeatureExtractor", "compute_fvd", "fvd_from_features", "InceptionI3d"]
