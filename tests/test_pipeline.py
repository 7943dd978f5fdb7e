"""TFAAPipeline on a tiny random SD 1.x (CPU): outputs, seeding, batched CFG, callbacks, errors, loading."""
import numpy as np
import pytest
import torch

from tfaa.models import VideoUNet
from tfaa.pipeline import TFAAPipeline
from tfaa.testing import tiny_sd_components

SIZE = dict(height=32, width=32, num_inference_steps=2)


def make_pipe(tmp_path=None, randomize=True):
    c = tiny_sd_components(tmp_path)
    c["unet"] = VideoUNet.from_unet2d(c["unet"])
    if randomize:
        g = torch.Generator().manual_seed(7)
        with torch.no_grad():
            for p in c["unet"].temporal_parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    pipe = TFAAPipeline(**c)
    pipe.set_progress_bar_config(disable=True)
    return pipe


@pytest.fixture(scope="module")
def pipe():
    return make_pipe()


def test_output_types_and_shapes(pipe):
    np_out = pipe(["the cat", "a dog"], num_frames=3, seed=0, **SIZE).frames
    assert np_out.shape == (2, 3, 32, 32, 3) and np_out.dtype == np.float32
    assert 0.0 <= np_out.min() and np_out.max() <= 1.0 and np_out.std() > 0
    pt_out = pipe(["the cat", "a dog"], num_frames=3, seed=0, output_type="pt", **SIZE).frames
    assert pt_out.shape == (2, 3, 3, 32, 32)
    np.testing.assert_allclose(pt_out.permute(0, 1, 3, 4, 2).numpy(), np_out, atol=1e-6)
    pil_out = pipe("the cat", num_frames=2, seed=0, output_type="pil", **SIZE).frames
    assert len(pil_out) == 1 and len(pil_out[0]) == 2 and pil_out[0][0].size == (32, 32)
    lat = pipe("the cat", num_frames=2, seed=0, output_type="latent", **SIZE).frames
    assert lat.shape == (1, 2, 4, 4, 4)
    (frames,) = pipe("the cat", num_frames=1, seed=0, return_dict=False, **SIZE)
    assert frames.shape == (1, 1, 32, 32, 3)


def test_seed_generator_and_latents_agree(pipe):
    a = pipe("the cat", num_frames=2, seed=3, **SIZE).frames
    b = pipe("the cat", num_frames=2, generator=torch.Generator().manual_seed(3), **SIZE).frames
    c = pipe("the cat", num_frames=2, seed=4, **SIZE).frames
    noise = torch.randn((1, 2, 4, 4, 4), generator=torch.Generator().manual_seed(3))
    d = pipe("the cat", num_frames=2, latents=noise, **SIZE).frames
    e = pipe("the cat", num_frames=2, latents=noise.reshape(2, 4, 4, 4), **SIZE).frames
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(a, d)
    np.testing.assert_array_equal(a, e)
    assert np.abs(a - c).max() > 1e-3


def test_cfg_is_one_batched_unet_call_with_per_frame_text(pipe, monkeypatch):
    calls = []
    forward = pipe.unet.forward

    def spy(sample, t, ehs, num_frames, **kw):
        calls.append((sample.shape[0], num_frames, ehs.clone()))
        return forward(sample, t, ehs, num_frames=num_frames, **kw)

    monkeypatch.setattr(pipe.unet, "forward", spy)
    pipe(["the cat", "a dog"], num_frames=3, seed=0, negative_prompt=["dog", "cat"], **SIZE)
    assert len(calls) == SIZE["num_inference_steps"]
    rows, frames, ehs = calls[0]
    assert rows == 2 * 2 * 3 and frames == 3  # [uncond, cond] x 2 videos x 3 frames
    for video in range(4):
        clip = ehs[video * 3:(video + 1) * 3]
        assert torch.equal(clip[0], clip[1]) and torch.equal(clip[0], clip[2])
    assert not torch.equal(ehs[0], ehs[3]) and not torch.equal(ehs[0], ehs[6])
    calls.clear()
    pipe("the cat", num_frames=2, seed=0, guidance_scale=1.0, **SIZE)
    assert calls[0][0] == 2  # no guidance: conditional half only


def test_negative_prompt_changes_the_video(pipe):
    a = pipe("the cat", num_frames=2, seed=0, **SIZE).frames
    b = pipe("the cat", num_frames=2, seed=0, negative_prompt="dog", **SIZE).frames
    c = pipe("the cat", num_frames=2, seed=0, negative_prompt=[""], **SIZE).frames
    assert np.abs(a - b).max() > 1e-4
    np.testing.assert_array_equal(a, c)


def test_decode_chunk_size_does_not_change_the_video(pipe):
    a = pipe("the cat", num_frames=3, seed=0, decode_chunk_size=1, **SIZE).frames
    b = pipe("the cat", num_frames=3, seed=0, decode_chunk_size=8, **SIZE).frames
    np.testing.assert_allclose(a, b, atol=1e-5)


def test_callback_on_step_end_sees_and_replaces_latents(pipe):
    seen = []

    def callback(p, step, t, tensors):
        seen.append((step, int(t), tuple(tensors["latents"].shape), tuple(tensors["prompt_embeds"].shape)))
        return {"latents": torch.zeros_like(tensors["latents"])}

    out = pipe("the cat", num_frames=2, seed=0, output_type="latent", callback_on_step_end=callback,
               callback_on_step_end_tensor_inputs=["latents", "prompt_embeds"], **SIZE).frames
    assert [s[0] for s in seen] == [0, 1]
    assert seen[0][2] == (2, 4, 4, 4) and seen[0][3] == (4, 77, 32)
    assert torch.equal(out, torch.zeros_like(out))


def test_any_diffusers_scheduler(pipe):
    from diffusers import DPMSolverMultistepScheduler, EulerDiscreteScheduler

    ddim = pipe.scheduler
    try:
        for cls in (DPMSolverMultistepScheduler, EulerDiscreteScheduler):
            pipe.scheduler = cls.from_config(ddim.config)
            out = pipe("the cat", num_frames=2, seed=0, **SIZE).frames
            assert out.shape == (1, 2, 32, 32, 3) and np.isfinite(out).all()
    finally:
        pipe.scheduler = ddim


def test_single_frame_matches_stable_diffusion_pipeline(tmp_path):
    """F=1 is an image: the video pipeline must produce Stable Diffusion's image."""
    from diffusers import StableDiffusionPipeline

    pipe = make_pipe(tmp_path)
    sd = StableDiffusionPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                 unet=pipe.unet.unet, scheduler=pipe.scheduler, safety_checker=None,
                                 feature_extractor=None, requires_safety_checker=False)
    sd.set_progress_bar_config(disable=True)
    noise = torch.randn((2, 4, 4, 4), generator=torch.Generator().manual_seed(0))
    ours = pipe(["the cat", "a dog"], num_frames=1, latents=noise, **SIZE).frames[:, 0]
    ref = sd(["the cat", "a dog"], latents=noise, output_type="np", **SIZE).images
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@pytest.mark.parametrize("kwargs, error, match", [
    (dict(num_frames=0), ValueError, "num_frames must be an integer >= 1"),
    (dict(height=30), ValueError, "height must be a positive multiple of 8"),
    (dict(width=20), ValueError, "width must be a positive multiple of 8"),
    (dict(prompt=["a", "b"], negative_prompt=["x"]), ValueError, "negative_prompt has 1 entries but prompt has 2"),
    (dict(prompt=[]), TypeError, "prompt must be a string or a non-empty list"),
    (dict(num_inference_steps=0), ValueError, "num_inference_steps"),
    (dict(output_type="gif"), ValueError, "output_type must be one of"),
    (dict(decode_chunk_size=0), ValueError, "decode_chunk_size"),
    (dict(latents=torch.zeros(1, 3, 4, 4, 4)), ValueError, "latents must have shape"),
    (dict(callback_on_step_end_tensor_inputs=["noise"]), ValueError, "callback_on_step_end_tensor_inputs"),
])
def test_bad_inputs_raise_clear_errors(pipe, kwargs, error, match):
    args = dict(prompt="the cat", num_frames=2, height=32, width=32, num_inference_steps=1)
    args.update(kwargs)
    with pytest.raises(error, match=match):
        pipe(**args)


def test_save_and_load_pipeline_and_inflate_sd_directory(tmp_path):
    from diffusers import StableDiffusionPipeline

    pipe = make_pipe(tmp_path)
    expected = pipe("the cat", num_frames=2, seed=0, **SIZE).frames
    pipe.save_pretrained(tmp_path / "tfaa_pipe")
    loaded = TFAAPipeline.from_pretrained(tmp_path / "tfaa_pipe")
    loaded.set_progress_bar_config(disable=True)
    np.testing.assert_array_equal(loaded("the cat", num_frames=2, seed=0, **SIZE).frames, expected)
    via_from_sd = TFAAPipeline.from_sd(tmp_path / "tfaa_pipe")
    via_from_sd.set_progress_bar_config(disable=True)
    assert isinstance(via_from_sd.unet, VideoUNet)
    np.testing.assert_array_equal(via_from_sd("the cat", num_frames=2, seed=0, **SIZE).frames, expected)

    # a plain SD 1.x directory: the 2D UNet is inflated and the temporal weights loaded on top
    sd = StableDiffusionPipeline(vae=pipe.vae, text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer,
                                 unet=pipe.unet.unet, scheduler=pipe.scheduler, safety_checker=None,
                                 feature_extractor=None, requires_safety_checker=False)
    sd.save_pretrained(tmp_path / "sd")
    pipe.unet.save_temporal_weights(tmp_path / "tw")
    inflated = TFAAPipeline.from_sd(tmp_path / "sd", temporal_weights=tmp_path / "tw")
    inflated.set_progress_bar_config(disable=True)
    assert isinstance(inflated.scheduler, type(pipe.scheduler))
    np.testing.assert_array_equal(inflated("the cat", num_frames=2, seed=0, **SIZE).frames, expected)

    with pytest.raises(FileNotFoundError, match="does not exist"):
        TFAAPipeline.from_sd(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no vae/ subfolder"):
        TFAAPipeline.from_sd(tmp_path / "tw")


@pytest.mark.gpu
def test_fused_backends_match_torch_backend_on_cuda(tmp_path):
    """backend="auto" on CUDA (Triton/CUDA kernels) gives the torch-reference video within bf16 tolerance."""
    pipe = make_pipe(tmp_path).to("cuda", torch.bfloat16)
    args = dict(prompt=["the cat", "a dog"], num_frames=5, height=64, width=64, num_inference_steps=3, seed=0,
                output_type="pt")
    pipe.unet.set_backend("torch")
    ref = pipe(**args).frames.double()
    pipe.unet.set_backend("auto")
    fused = pipe(**args).frames.double()
    rel = (fused - ref).norm() / ref.norm()
    assert rel < 2e-2, f"relative error {rel:.3e}"
