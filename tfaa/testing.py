"""Tiny random Stable-Diffusion-1.x components for tests and examples (CPU, built in ~1 s).

Nothing here downloads anything: the tokenizer is built from ``vocab.json``/``merges.txt`` files
written by :func:`write_tiny_clip_vocab`, every model is randomly initialised from a fixed seed.

- :func:`tiny_sd_components` -> ``dict(unet, vae, text_encoder, tokenizer, scheduler)``
- :func:`sd14_unet_config` -> the Stable Diffusion v1.4 ``UNet2DConditionModel`` config dict
"""
from __future__ import annotations

import json
import os
import tempfile

import torch

__all__ = [
    "tiny_sd_components",
    "tiny_unet",
    "tiny_vae",
    "tiny_text_encoder",
    "tiny_tokenizer",
    "tiny_scheduler",
    "write_tiny_clip_vocab",
    "sd14_unet_config",
    "TINY_CROSS_ATTENTION_DIM",
    "TINY_VAE_SCALE_FACTOR",
]

#: hidden size of the tiny CLIP text model == cross_attention_dim of the tiny UNet
TINY_CROSS_ATTENTION_DIM = 32
#: the tiny VAE downsamples by 8 like SD's (4 blocks), so pixel sizes must be multiples of 8
TINY_VAE_SCALE_FACTOR = 8

_MERGES = ["t h", "th e</w>", "a n", "an d</w>", "c a", "ca t</w>", "d o", "do g</w>",
           "r u", "ru n", "run s</w>", "i n", "in g</w>"]


def _bytes_to_unicode() -> dict[int, str]:
    """The GPT-2/CLIP byte -> printable unicode character table (byte-level BPE alphabet)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def write_tiny_clip_vocab(directory: str) -> str:
    """Write a small but complete CLIP BPE vocabulary (``vocab.json``, ``merges.txt``) to ``directory``.

    The vocabulary holds all 256 byte symbols, each also with the ``</w>`` end-of-word suffix, the
    merged tokens of a few merges, and ``<|startoftext|>`` / ``<|endoftext|>``; any text tokenizes.
    Returns ``directory``.
    """
    os.makedirs(directory, exist_ok=True)
    chars = list(_bytes_to_unicode().values())
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    for merge in _MERGES:
        vocab["".join(merge.split())] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    with open(os.path.join(directory, "vocab.json"), "w", encoding="utf-8") as fh:
        json.dump(vocab, fh)
    with open(os.path.join(directory, "merges.txt"), "w", encoding="utf-8") as fh:
        fh.write("#version: 0.2\n" + "\n".join(_MERGES) + "\n")
    return directory


def tiny_tokenizer(tmp_dir: str | None = None):
    """A ``CLIPTokenizer`` (``model_max_length=77``) built from vocab files written to ``tmp_dir``
    (a temporary directory, removed afterwards, when None)."""
    from transformers import CLIPTokenizer

    if tmp_dir is None:
        with tempfile.TemporaryDirectory() as d:
            return tiny_tokenizer(d)
    directory = write_tiny_clip_vocab(os.path.join(tmp_dir, "tiny_clip_tokenizer"))
    return CLIPTokenizer.from_pretrained(directory, model_max_length=77)


def tiny_text_encoder(vocab_size: int, eos_token_id: int, pad_token_id: int, bos_token_id: int,
                      seed: int = 0):
    """A 2-layer ``CLIPTextModel`` with hidden size :data:`TINY_CROSS_ATTENTION_DIM`, 77 positions."""
    from transformers import CLIPTextConfig, CLIPTextModel

    config = CLIPTextConfig(
        vocab_size=vocab_size, hidden_size=TINY_CROSS_ATTENTION_DIM, intermediate_size=37,
        num_hidden_layers=2, num_attention_heads=4, max_position_embeddings=77,
        layer_norm_eps=1e-5, bos_token_id=bos_token_id, eos_token_id=eos_token_id,
        pad_token_id=pad_token_id, projection_dim=TINY_CROSS_ATTENTION_DIM,
    )
    torch.manual_seed(seed)
    return CLIPTextModel(config).eval()


def tiny_unet(seed: int = 0):
    """A tiny SD1.x-layout ``UNet2DConditionModel``: block_out_channels (32, 64), one ResNet per
    block, a cross-attention down/up level, a cross-attention mid block, 8 heads (``attention_head_dim=8``
    as in SD1.x's config), ``cross_attention_dim=32``, ``norm_num_groups=32``, sample_size 8."""
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        sample_size=8, in_channels=4, out_channels=4, layers_per_block=1,
        block_out_channels=(32, 64),
        down_block_types=("CrossAttnDownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "CrossAttnUpBlock2D"),
        cross_attention_dim=TINY_CROSS_ATTENTION_DIM, attention_head_dim=8, norm_num_groups=32,
    ).eval()


def tiny_vae(seed: int = 0):
    """A tiny ``AutoencoderKL`` with 4 blocks of 8 channels: downsamples by 8 like SD's, 4 latent channels."""
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
        block_out_channels=(8, 8, 8, 8), layers_per_block=1, norm_num_groups=8, sample_size=32,
    ).eval()


def tiny_scheduler():
    """SD1.x's DDIM scheduler settings (scaled_linear betas 0.00085..0.012, 1000 steps, epsilon)."""
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear",
        clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon",
    )


def tiny_sd_components(tmp_dir: str | None = None, seed: int = 0) -> dict:
    """All components of a tiny random Stable Diffusion 1.x, on the CPU in fp32, eval mode.

    Returns ``dict(unet=UNet2DConditionModel, vae=AutoencoderKL, text_encoder=CLIPTextModel,
    tokenizer=CLIPTokenizer, scheduler=DDIMScheduler)``. The same ``seed`` gives the same weights.
    ``tmp_dir``: where the tokenizer's vocab files are written (a temporary directory when None).
    Pixel sizes must be multiples of 8 (VAE factor 8); e.g. 32x32 pixels -> 4x4 latents.
    """
    tokenizer = tiny_tokenizer(tmp_dir)
    text_encoder = tiny_text_encoder(
        vocab_size=len(tokenizer), eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id, bos_token_id=tokenizer.bos_token_id, seed=seed + 1,
    )
    return dict(unet=tiny_unet(seed), vae=tiny_vae(seed + 2), text_encoder=text_encoder,
                tokenizer=tokenizer, scheduler=tiny_scheduler())


def sd14_unet_config() -> dict:
    """The ``UNet2DConditionModel`` config of Stable Diffusion v1.4 (CompVis/stable-diffusion-v1-4,
    ``unet/config.json``), written out by hand: 860M parameters, 22 ResNets, 16 transformers."""
    return {
        "act_fn": "silu",
        "attention_head_dim": 8,
        "block_out_channels": [320, 640, 1280, 1280],
        "center_input_sample": False,
        "cross_attention_dim": 768,
        "down_block_types": ["CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                             "CrossAttnDownBlock2D", "DownBlock2D"],
        "downsample_padding": 1,
        "flip_sin_to_cos": True,
        "freq_shift": 0,
        "in_channels": 4,
        "layers_per_block": 2,
        "mid_block_scale_factor": 1,
        "norm_eps": 1e-05,
        "norm_num_groups": 32,
        "out_channels": 4,
        "sample_size": 64,
        "up_block_types": ["UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D",
                           "CrossAttnUpBlock2D"],
    }
