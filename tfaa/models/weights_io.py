"""Reading state dicts from files and directories without unpickling arbitrary objects."""
from __future__ import annotations

import os
from typing import Dict, Union

import torch

WEIGHT_FILE_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin")


def _find_weight_file(directory: str) -> str:
    names = sorted(os.listdir(directory))
    for preferred in ("diffusion_pytorch_model.safetensors", "model.safetensors"):
        if preferred in names:
            return os.path.join(directory, preferred)
    candidates = [n for n in names if n.endswith(WEIGHT_FILE_SUFFIXES)]
    if len(candidates) != 1:
        raise FileNotFoundError(f"expected exactly one weight file ({', '.join(WEIGHT_FILE_SUFFIXES)}) in "
                                f"{directory!r}, found {candidates or 'none'}")
    return os.path.join(directory, candidates[0])


def load_state_dict_file(path: Union[str, os.PathLike]) -> Dict[str, torch.Tensor]:
    """A flat ``{name: tensor}`` on the CPU from ``path``: a ``.safetensors`` file, a torch file
    (``.ckpt``/``.pt``/``.pth``/``.bin``, read with ``weights_only=True``; a top-level
    ``"state_dict"`` entry is unwrapped), or a directory holding one such file."""
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"weights path {path!r} does not exist")
    if os.path.isdir(path):
        path = _find_weight_file(path)
    if path.endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(path, device="cpu")
    if not path.endswith(WEIGHT_FILE_SUFFIXES):
        raise ValueError(f"unknown weight file type {path!r}; expected one of {WEIGHT_FILE_SUFFIXES}")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise ValueError(f"{path!r} does not hold a state dict (got {type(state).__name__})")
    return {k: v for k, v in state.items() if torch.is_tensor(v)}
