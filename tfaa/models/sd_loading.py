"""Loading Stable Diffusion 1.x UNet weights: diffusers directories and original single files.

Original (CompVis/LDM) checkpoints name the UNet ``model.diffusion_model.input_blocks.*`` etc.;
they are converted with diffusers' offline single-file converter
(``diffusers.loaders.single_file_utils.convert_ldm_unet_checkpoint``) and a config we supply
(SD 1.4's by default), so no hub access is needed. :func:`unet_diffusers_to_ldm` is the inverse
mapping (diffusers -> original keys) for SD 1.x layouts, used for export and tests.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

import torch
from diffusers import UNet2DConditionModel

from .video_unet import clean_unet_config
from .weights_io import load_state_dict_file

LDM_UNET_PREFIX = "model.diffusion_model."


def load_unet2d(path: Union[str, os.PathLike], unet_config: Optional[Dict[str, Any]] = None,
                torch_dtype: Optional[torch.dtype] = None) -> UNet2DConditionModel:
    """An SD 1.x ``UNet2DConditionModel`` from a local path, on the CPU.

    ``path`` is a diffusers pipeline directory (with ``unet/``), a diffusers UNet directory (with
    ``config.json``), or a single ``.safetensors``/``.ckpt`` file holding an original-SD checkpoint
    (``model.diffusion_model.*`` keys) or a diffusers UNet state dict. ``unet_config`` is the
    architecture of single files (default: :func:`tfaa.testing.sd14_unet_config`).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise FileNotFoundError(f"model path {path!r} does not exist (a diffusers SD 1.x directory "
                                "or a .safetensors/.ckpt file is expected)")
    if os.path.isdir(path):
        if os.path.isfile(os.path.join(path, "unet", "config.json")):
            return UNet2DConditionModel.from_pretrained(path, subfolder="unet", torch_dtype=torch_dtype)
        if os.path.isfile(os.path.join(path, "config.json")):
            return UNet2DConditionModel.from_pretrained(path, torch_dtype=torch_dtype)
        raise FileNotFoundError(f"{path!r} is neither a diffusers pipeline directory (no unet/config.json) "
                                "nor a UNet directory (no config.json)")
    if unet_config is None:
        from ..testing import sd14_unet_config

        unet_config = sd14_unet_config()
    config = clean_unet_config(unet_config)
    state = load_state_dict_file(path)
    if any(k.startswith(LDM_UNET_PREFIX) for k in state):
        from diffusers.loaders.single_file_utils import convert_ldm_unet_checkpoint

        state = convert_ldm_unet_checkpoint(state, config)
    with torch.device("meta"):  # check the fit before allocating anything
        unet = UNet2DConditionModel(**config)
    expected = unet.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    mismatched = [f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}" for k, v in expected.items()
                  if k in state and state[k].shape != v.shape]
    if missing or unexpected or mismatched:
        raise ValueError(f"{path!r} does not fit the UNet config (pass unet_config for non-SD-1.x models): "
                         f"missing keys {missing[:5]} ({len(missing)}), unexpected keys {unexpected[:5]} "
                         f"({len(unexpected)}), shape-mismatched {mismatched[:5]} ({len(mismatched)})")
    unet.load_state_dict({k: v.to(torch_dtype) if torch_dtype is not None else v for k, v in state.items()},
                         assign=True)
    return unet.eval()


def _ldm_prefix_map(config: Dict[str, Any]) -> Dict[str, str]:
    """diffusers module prefix -> original LDM prefix, for an SD 1.x layout UNet config."""
    down_types, up_types = config["down_block_types"], config["up_block_types"]
    lpb = config["layers_per_block"]
    levels = len(down_types)
    m = {"time_embedding.linear_1.": "time_embed.0.", "time_embedding.linear_2.": "time_embed.2.",
         "conv_in.": "input_blocks.0.0.", "conv_norm_out.": "out.0.", "conv_out.": "out.2.",
         "mid_block.attentions.0.": "middle_block.1.", "mid_block.resnets.0.": "middle_block.0.",
         "mid_block.resnets.1.": "middle_block.2."}
    for i in range(levels):
        for j in range(lpb):
            m[f"down_blocks.{i}.resnets.{j}."] = f"input_blocks.{(lpb + 1) * i + j + 1}.0."
            if "CrossAttn" in down_types[i]:
                m[f"down_blocks.{i}.attentions.{j}."] = f"input_blocks.{(lpb + 1) * i + j + 1}.1."
        if i < levels - 1:
            m[f"down_blocks.{i}.downsamplers.0.conv."] = f"input_blocks.{(lpb + 1) * (i + 1)}.0.op."
        for j in range(lpb + 1):
            m[f"up_blocks.{i}.resnets.{j}."] = f"output_blocks.{(lpb + 1) * i + j}.0."
            if "CrossAttn" in up_types[i]:
                m[f"up_blocks.{i}.attentions.{j}."] = f"output_blocks.{(lpb + 1) * i + j}.1."
        if i < levels - 1:
            slot = 2 if "CrossAttn" in up_types[i] else 1
            m[f"up_blocks.{i}.upsamplers.0."] = f"output_blocks.{(lpb + 1) * i + lpb}.{slot}."
    return m


_RESNET_RENAMES = (("norm1.", "in_layers.0."), ("conv1.", "in_layers.2."), ("norm2.", "out_layers.0."),
                   ("conv2.", "out_layers.3."), ("time_emb_proj.", "emb_layers.1."),
                   ("conv_shortcut.", "skip_connection."))


def unet_diffusers_to_ldm(state_dict: Dict[str, torch.Tensor], config: Dict[str, Any]) -> Dict[str, torch.Tensor]:
    """Rename a diffusers SD 1.x UNet state dict to original-SD keys (``model.diffusion_model.*``)."""
    prefixes = sorted(_ldm_prefix_map(config).items(), key=lambda kv: -len(kv[0]))
    out = {}
    for key, value in state_dict.items():
        for d_prefix, l_prefix in prefixes:
            if key.startswith(d_prefix):
                rest = key[len(d_prefix):]
                if ".resnets." in d_prefix:
                    for d_name, l_name in _RESNET_RENAMES:
                        if rest.startswith(d_name):
                            rest = l_name + rest[len(d_name):]
                            break
                out[LDM_UNET_PREFIX + l_prefix + rest] = value
                break
        else:
            raise KeyError(f"no original-SD name for diffusers key {key!r}")
    return out
