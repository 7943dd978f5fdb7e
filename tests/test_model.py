"""tfaa.models: position embedding, TFAA block, temporal conv block, video UNet inflation, loaders."""
import os

import pytest
import torch
import torch.nn.functional as F

import tfaa_kernels
from tfaa.models import (FramePositionEmbedding, TemporalConvBlock, TFAABlock, VideoUNet, load_unet2d,
                         unet_diffusers_to_ldm)
from tfaa.testing import sd14_unet_config, tiny_unet

from helpers import assert_close


def randomize_temporal(video: VideoUNet, std: float = 0.05) -> None:
    """Give every temporal parameter random non-zero values (zero-init would hide bugs)."""
    g = torch.Generator().manual_seed(123)
    with torch.no_grad():
        for p in video.temporal_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * std)


@pytest.fixture(scope="module")
def unet2d():
    return tiny_unet(seed=0)


def unet_inputs(batch, frames, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = batch * frames
    return (torch.randn(n, 4, 4, 4, generator=g), torch.tensor(437),
            torch.randn(n, 77, 32, generator=g))


# ---------------------------------------------------------------- position embedding
def test_frame_position_embedding_any_length():
    pe = FramePositionEmbedding(10)
    p24, p26 = pe(24), pe(26)
    assert p26.shape == (26, 10)
    assert torch.equal(p26[:24], p24)
    assert torch.equal(p24[0], torch.tensor([0.0, 1.0] * 5))
    assert torch.allclose(p24[3, 0], torch.sin(torch.tensor(3.0)))
    assert FramePositionEmbedding(7)(5).shape == (5, 7)
    for dim in (7, 10):  # the formula of the docstring, odd C ending in a sine
        got = FramePositionEmbedding(dim)(6)
        f = torch.arange(6.0)[:, None]
        expected = torch.stack([torch.sin(f[:, 0] / 10000 ** (2 * (c // 2) / dim)) if c % 2 == 0
                                else torch.cos(f[:, 0] / 10000 ** (2 * (c // 2) / dim)) for c in range(dim)], 1)
        torch.testing.assert_close(got, expected)
    with pytest.raises(ValueError, match="num_frames"):
        pe(0)


# ---------------------------------------------------------------- TFAA block
@pytest.mark.parametrize("mode", ["temporal", "spatial"])
def test_tfaa_block_matches_explicit_formula(mode):
    C, H, F_, B, L = 32, 4, 3, 2, 5
    block = TFAABlock(C, H, mode=mode, backend="torch")
    assert sum(p.numel() for p in block.parameters()) == 4 * C * C + 3 * C
    assert block.qkv.bias is None and block.qkv.weight.shape == (3 * C, C)
    x = torch.randn(B * F_, L, C)
    assert torch.equal(block(x, F_), x)  # zero-initialised out_proj: identity
    torch.nn.init.normal_(block.out_proj.weight)
    torch.nn.init.normal_(block.out_proj.bias)
    with torch.no_grad():
        block.norm.weight.normal_()
    z = block.norm(x).view(B, F_, L, C) + FramePositionEmbedding(C)(F_)[None, :, None]
    z = z.view(B * F_, L, C)
    wq, wk, wv = block.qkv.weight.chunk(3)
    q, k, v = ((z @ w.T).view(B * F_, L, H, C // H) for w in (wq, wk, wv))
    attn = tfaa_kernels.reference.first_adjacent_attention(q, k, v, F_, mode=mode)
    expected = x + block.out_proj(attn.reshape(B * F_, L, C))
    torch.testing.assert_close(block(x, F_), expected, rtol=1e-5, atol=1e-5)


def test_tfaa_block_bad_arguments():
    with pytest.raises(ValueError, match="divisible by num_heads"):
        TFAABlock(30, 8)
    with pytest.raises(ValueError, match="mode"):
        TFAABlock(32, 8, mode="full")
    with pytest.raises(ValueError, match="multiple of num_frames"):
        TFAABlock(32, 8)(torch.randn(5, 3, 32), 2)


# ---------------------------------------------------------------- temporal conv block
def test_temporal_conv_block_formula_and_layout():
    C, F_, B = 32, 3, 2
    block = TemporalConvBlock(C, num_layers=4, backend="torch")
    assert sum(p.numel() for p in block.parameters()) == 4 * (3 * C * C + 3 * C)
    x = torch.randn(B * F_, C, 3, 5)
    assert torch.equal(block(x, F_), x)  # last conv zero-initialised: identity
    for p in block.parameters():
        torch.nn.init.normal_(p, std=0.1)
    h = x
    for norm, conv in zip(block.norms, block.convs):
        h = tfaa_kernels.reference.temporal_conv1d(F.silu(norm(h)), conv.weight, conv.bias, F_)
    torch.testing.assert_close(block(x, F_), x + h, rtol=1e-5, atol=1e-5)
    y_cl = block(x.to(memory_format=torch.channels_last), F_)
    assert y_cl.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(y_cl, x + h, rtol=1e-5, atol=1e-5)
    # clips do not leak into each other; the first frame sees no "previous" frame
    x2 = x.clone()
    x2[F_:] += 1.0
    assert torch.equal(block(x2, F_)[:F_], block(x, F_)[:F_])


def test_temporal_conv_block_bad_arguments():
    with pytest.raises(ValueError, match="norm_num_groups"):
        TemporalConvBlock(48, norm_num_groups=32)
    with pytest.raises(ValueError, match="kernel_size must be odd"):
        TemporalConvBlock(32, kernel_size=2)


# ---------------------------------------------------------------- video UNet
def test_inflation_places_one_block_per_resnet_and_transformer(unet2d):
    from diffusers.models.attention import BasicTransformerBlock
    from diffusers.models.resnet import ResnetBlock2D

    video = VideoUNet.from_unet2d(unet2d)
    n_res = sum(isinstance(m, ResnetBlock2D) for m in unet2d.modules())
    n_tf = sum(isinstance(m, BasicTransformerBlock) for m in unet2d.modules())
    assert len(video.temporal.conv_blocks) == n_res == 8  # 2 down + 2 mid + 4 up
    assert len(video.temporal.tfaa_blocks) == n_tf == 4  # 1 down + 1 mid + 2 up
    heads = {b.num_heads for b in video.temporal.tfaa_blocks.values()}
    assert heads == {8}  # attention_head_dim=8 in an SD1.x config means 8 heads
    # spatial keys are the image UNet's
    assert set(video.unet.state_dict()) == set(unet2d.state_dict())


def test_zero_init_video_unet_equals_image_unet_at_any_F(unet2d):
    video = VideoUNet.from_unet2d(unet2d)
    for frames in (1, 3):
        x, t, ehs = unet_inputs(2, frames)
        with torch.no_grad():
            assert torch.equal(video(x, t, ehs, num_frames=frames).sample, unet2d(x, t, ehs).sample)


def test_single_frame_equals_image_unet_with_trained_temporal_weights(unet2d):
    video = VideoUNet.from_unet2d(unet2d)
    randomize_temporal(video)
    x, t, ehs = unet_inputs(3, 1)
    with torch.no_grad():
        assert torch.equal(video(x, t, ehs, num_frames=1).sample, unet2d(x, t, ehs).sample)
        x, t, ehs = unet_inputs(1, 3)
        assert not torch.allclose(video(x, t, ehs, num_frames=3).sample, unet2d(x, t, ehs).sample)


def test_video_unet_frames_are_coupled_and_clips_independent(unet2d):
    video = VideoUNet.from_unet2d(unet2d)
    randomize_temporal(video)
    x, t, ehs = unet_inputs(2, 3)
    with torch.no_grad():
        y = video(x, t, ehs, num_frames=3).sample
        x2 = x.clone()
        x2[2] += 1.0  # change the last frame of clip 0
        y2 = video(x2, t, ehs, num_frames=3).sample
        # frame 0 attends/convolves with frame 1 and 2 changes reach it through the conv; clip 1 untouched
        assert not torch.allclose(y2[0], y[0])
        assert torch.equal(y2[3:], y[3:])
        # B rows of text embeddings are repeated per frame
        y3 = video(x, t, ehs[::3], num_frames=3).sample
        ehs_rep = ehs[::3].repeat_interleave(3, 0)
        assert torch.equal(y3, video(x, t, ehs_rep, num_frames=3).sample)


def test_video_unet_bad_num_frames(unet2d):
    video = VideoUNet.from_unet2d(unet2d)
    x, t, ehs = unet_inputs(1, 4)
    with pytest.raises(ValueError, match="multiple of num_frames"):
        video(x, t, ehs, num_frames=3)
    with pytest.raises(ValueError, match="num_frames must be >= 1"):
        video(x, t, ehs, num_frames=0)
    with pytest.raises(ValueError, match="encoder_hidden_states"):
        video(x, t, ehs[:3], num_frames=2)


def test_freeze_spatial_and_backend(unet2d):
    video = VideoUNet.from_unet2d(unet2d).freeze_spatial()
    trainable = {id(p) for p in video.parameters() if p.requires_grad}
    assert trainable == {id(p) for p in video.temporal_parameters()}
    assert all(not p.requires_grad for p in video.unet.parameters())
    video.set_backend("torch")
    blocks = list(video.temporal.conv_blocks.values()) + list(video.temporal.tfaa_blocks.values())
    assert {b.backend for b in blocks} == {"torch"}
    assert video.config.backend == "torch"
    video.set_backend("nonsense")
    with pytest.raises(ValueError, match="backend"):
        video(*unet_inputs(1, 2), num_frames=2)


def _grads(video, x, t, ehs, frames, device_type="cpu", autocast=False):
    video.zero_grad(set_to_none=True)
    with torch.autocast(device_type, dtype=torch.bfloat16, enabled=autocast):
        out = video(x, t, ehs, num_frames=frames).sample
    out.float().square().mean().backward()
    return out.detach().float(), [p.grad.float().clone() for p in video.temporal_parameters()]


@pytest.mark.parametrize("backend", ["torch", "auto"])
def test_fuse_spatial_norm_act(unet2d, backend):
    """fuse_spatial_norm_act: every ResNet's two GroupNorm+SiLU pairs become one op (and the time
    embedding's SiLU moves into its projection), parameter names unchanged, idempotent; the output
    and the temporal gradients equal the unfused model's (fp32: "torch" is the same computation,
    "auto" the reference op); set_backend reaches the fused ops."""
    from tfaa.models.spatial_norm_act import GroupNormSiLU, SiLULinear, fuse_resnet_norm_act

    plain = VideoUNet.from_unet2d(unet2d, backend=backend)
    randomize_temporal(plain)
    plain.freeze_spatial().train()
    fused = VideoUNet.from_unet2d(unet2d, backend=backend)
    fused.load_state_dict(plain.state_dict())
    fused.freeze_spatial().fuse_spatial_norm_act().train()
    assert set(fused.state_dict()) == set(plain.state_dict())
    resnets = [m for m in fused.unet.modules() if type(m).__name__ == "ResnetBlock2D"]
    assert resnets and all(isinstance(r.norm1, GroupNormSiLU) and isinstance(r.norm2, GroupNormSiLU)
                           and isinstance(r.time_emb_proj, SiLULinear) for r in resnets)
    assert fuse_resnet_norm_act(fused.unet, backend) == 0  # already fused
    x, t, ehs = unet_inputs(1, 3)
    out0, g0 = _grads(plain, x, t, ehs, 3)
    out1, g1 = _grads(fused, x, t, ehs, 3)
    if backend == "torch":  # the same ops in the same order
        assert torch.equal(out1, out0) and all(torch.equal(a, b) for a, b in zip(g1, g0))
    assert_close(out1, out0, 1e-6, "output")
    for a, b in zip(g1, g0):
        assert_close(a, b, 1e-5, "temporal gradient")
    fused.set_backend("triton")
    assert {m.backend for m in fused.modules() if isinstance(m, GroupNormSiLU)} == {"triton"}
    # a UNet backend with no GroupNorm kernel ("cuda") leaves the choice to the op
    norm = torch.nn.GroupNorm(4, 8)
    x4 = torch.randn(2, 8, 3, 3)
    torch.testing.assert_close(GroupNormSiLU(norm, "cuda")(x4), F.silu(norm(x4)))


@pytest.mark.gpu
def test_fuse_spatial_norm_act_memory_gpu(unet2d):
    """Under CUDA bf16 autocast the fused GroupNorm+SiLU ops keep fewer bytes for the backward
    than diffusers' GroupNorm (fp32 under autocast) + SiLU: counted through saved-tensor hooks, same
    temporal gradients within bf16 tolerance. "auto" takes the Triton backward inside
    tfaa_kernels.auto_for_cuda_graphs (then only the op's input is kept), the reference eager."""
    def saved(video, context):
        total = [0]

        def pack(tensor):
            total[0] += tensor.numel() * tensor.element_size()
            return tensor
        x, t, ehs = (a.cuda() for a in unet_inputs(2, 4))
        with context, torch.autograd.graph.saved_tensors_hooks(pack, lambda tensor: tensor):
            out, grads = _grads(video, x, t, ehs, 4, "cuda", autocast=True)
        return total[0], out, grads

    import contextlib
    plain = VideoUNet.from_unet2d(unet2d, backend="torch").cuda()
    randomize_temporal(plain)
    plain.freeze_spatial().train()
    fused = VideoUNet.from_unet2d(unet2d, backend="auto").cuda()
    fused.load_state_dict(plain.state_dict())
    fused.freeze_spatial().fuse_spatial_norm_act().train()
    b0, out0, g0 = saved(plain, contextlib.nullcontext())
    b1, out1, g1 = saved(fused, contextlib.nullcontext())
    b2, out2, g2 = saved(fused, tfaa_kernels.auto_for_cuda_graphs())
    assert b2 < b1 < b0, (b0, b1, b2)
    for out, grads in ((out1, g1), (out2, g2)):
        assert_close(out, out0, 3e-2)
        assert_close(torch.cat([g.flatten() for g in grads]), torch.cat([g.flatten() for g in g0]), 5e-2)


def test_gradient_checkpointing_gives_the_same_gradients(unet2d):
    video = VideoUNet.from_unet2d(unet2d)
    randomize_temporal(video)
    video.freeze_spatial().train()
    x, t, ehs = unet_inputs(1, 3)
    x6, _, ehs6 = unet_inputs(1, 6, seed=1)

    def grads():
        video.zero_grad(set_to_none=True)
        loss = video(x, t, ehs, num_frames=3).sample.square().mean()
        video(x6, t, ehs6, num_frames=2)  # another forward with another F before the backward
        loss.backward()
        return [p.grad.clone() for p in video.temporal_parameters()]

    plain = grads()
    video.enable_gradient_checkpointing()
    assert video.is_gradient_checkpointing
    calls = []
    for block in video.temporal.conv_blocks.values():
        block.register_forward_pre_hook(lambda *a: calls.append(1))
    checkpointed = grads()
    # the temporal blocks ran again in the backward pass (recomputation) with the first forward's F
    assert len(calls) > 2 * len(video.temporal.conv_blocks)
    for a, b in zip(plain, checkpointed):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert all(g.abs().sum() > 0 for g in checkpointed[-4:])


def test_sd14_parameter_counts_on_meta_device():
    with torch.device("meta"):
        video = VideoUNet(sd14_unet_config())
    millions = lambda params: round(sum(p.numel() for p in params) / 1e6, 1)  # noqa: E731
    assert len(video.temporal.conv_blocks) == 22 and len(video.temporal.tfaa_blocks) == 16
    assert millions(video.temporal.conv_blocks.parameters()) == 266.9
    assert millions(video.temporal.tfaa_blocks.parameters()) == 49.6
    assert millions(video.temporal_parameters()) == 316.5
    assert millions(video.parameters()) == 1176.0
    assert millions(video.unet.parameters()) == 859.5


# ---------------------------------------------------------------- saving and loading
def test_temporal_weights_round_trip_and_mismatch_errors(unet2d, tmp_path):
    video = VideoUNet.from_unet2d(unet2d)
    randomize_temporal(video)
    video.save_temporal_weights(tmp_path / "tw")
    assert sorted(os.listdir(tmp_path / "tw")) == ["config.json", "diffusion_pytorch_model.safetensors"]
    fresh = VideoUNet.from_unet2d(unet2d)
    fresh.load_temporal_weights(tmp_path / "tw")
    x, t, ehs = unet_inputs(1, 3)
    with torch.no_grad():
        assert torch.equal(fresh(x, t, ehs, num_frames=3).sample, video(x, t, ehs, num_frames=3).sample)
    fresh2 = VideoUNet.from_unet2d(unet2d)
    fresh2.load_temporal_weights(tmp_path / "tw" / "diffusion_pytorch_model.safetensors")
    assert torch.equal(next(iter(fresh2.temporal_parameters())), next(iter(video.temporal_parameters())))

    deeper = VideoUNet.from_unet2d(unet2d, conv_num_layers=5)
    with pytest.raises(ValueError, match=r"missing keys: .*norms\.4\.weight"):
        deeper.load_temporal_weights(tmp_path / "tw")
    shallower = VideoUNet.from_unet2d(unet2d, conv_num_layers=3)
    with pytest.raises(ValueError, match=r"unexpected keys: .*convs\.3\.weight"):
        shallower.load_temporal_weights(tmp_path / "tw")
    wider = VideoUNet.from_unet2d(unet2d, conv_kernel_size=5)
    with pytest.raises(ValueError, match="shape-mismatched"):
        wider.load_temporal_weights(tmp_path / "tw")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        fresh.load_temporal_weights(tmp_path / "nowhere")


def test_whole_video_unet_save_and_load(unet2d, tmp_path):
    video = VideoUNet.from_unet2d(unet2d, tfaa_mode="spatial", conv_num_layers=2)
    randomize_temporal(video)
    video.save_pretrained(tmp_path / "vu")
    loaded = VideoUNet.from_pretrained(tmp_path / "vu")
    assert loaded.config.tfaa_mode == "spatial" and loaded.config.conv_num_layers == 2
    x, t, ehs = unet_inputs(1, 2)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, ehs, num_frames=2).sample, video(x, t, ehs, num_frames=2).sample)


def _assert_same_unet(a, b):
    sa, sb = a.state_dict(), b.state_dict()
    assert sa.keys() == sb.keys()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_load_unet2d_from_diffusers_directories(unet2d, tmp_path):
    unet2d.save_pretrained(tmp_path / "unet_only")
    _assert_same_unet(load_unet2d(tmp_path / "unet_only"), unet2d)
    unet2d.save_pretrained(tmp_path / "pipe" / "unet")
    _assert_same_unet(load_unet2d(tmp_path / "pipe"), unet2d)
    video = VideoUNet.from_sd(tmp_path / "pipe")
    _assert_same_unet(video.unet, unet2d)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_unet2d(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="unet/config.json"):
        load_unet2d(tmp_path / "empty")


@pytest.mark.parametrize("suffix", [".safetensors", ".ckpt"])
def test_load_unet2d_from_original_sd_single_file(unet2d, tmp_path, suffix):
    config = dict(unet2d.config)
    ldm = unet_diffusers_to_ldm(unet2d.state_dict(), config)
    assert all(k.startswith("model.diffusion_model.") for k in ldm)
    assert "model.diffusion_model.input_blocks.1.1.proj_in.weight" in ldm
    assert "model.diffusion_model.output_blocks.1.1.conv.weight" in ldm  # level-0 upsampler (no attention)
    ldm["first_stage_model.decoder.conv_in.weight"] = torch.zeros(1)  # a full checkpoint has other models too
    path = tmp_path / f"tiny_sd{suffix}"
    if suffix == ".safetensors":
        from safetensors.torch import save_file
        save_file({k: v.contiguous() for k, v in ldm.items()}, path)
    else:
        torch.save({"state_dict": ldm, "global_step": 3}, path)
    loaded = load_unet2d(path, unet_config=config)
    _assert_same_unet(loaded, unet2d)
    x, t, ehs = unet_inputs(2, 1)
    with torch.no_grad():
        assert torch.equal(loaded(x, t, ehs).sample, unet2d(x, t, ehs).sample)
    video = VideoUNet.from_sd(path, unet_config=config)
    _assert_same_unet(video.unet, unet2d)
    with pytest.raises(ValueError, match=r"does not fit the UNet config.*shape-mismatched \['conv_in.weight"):
        load_unet2d(path)  # the default SD 1.4 config does not fit the tiny weights


class Payload:
    """An arbitrary pickled object: loading must refuse it."""


def test_ckpt_loading_never_unpickles_objects(tmp_path):
    path = tmp_path / "evil.ckpt"
    torch.save({"state_dict": {"w": torch.zeros(1)}, "obj": Payload()}, path)
    with pytest.raises(Exception, match="(?i)weights_only|unsupported|global"):
        load_unet2d(path)
