"""Fast sampling mode (``pipe.enable_fast_sampling()``, ``tfaa sample --fast``): same videos as
normal sampling (fp32 on CPU through fused QKV + channels_last + fullgraph torch.compile with the
aot_eager backend; bf16 on CUDA through inductor + CUDA graphs), the tfaa custom ops traced into
one graph, and argument errors."""
import pytest
import torch

from tfaa.fast import (FastSamplingConfig, OpaqueGroupNorm, make_up_block_norms_opaque, resolve_compile_mode,
                       vae_compile_mode)
from tfaa.models import VideoUNet
from tfaa.pipeline import TFAAPipeline
from tfaa.testing import tiny_sd_components, tiny_unet


def make_pipe(tmp_path):
    c = tiny_sd_components(str(tmp_path))
    c["unet"] = VideoUNet.from_unet2d(c["unet"])
    g = torch.Generator().manual_seed(7)
    with torch.no_grad():  # non-zero temporal weights: the temporal path changes the video
        for p in c["unet"].temporal_parameters():
            p.copy_(torch.randn(p.shape, generator=g) * 0.05)
    pipe = TFAAPipeline(**c)
    pipe.set_progress_bar_config(disable=True)
    return pipe


ARGS = dict(prompt=["the cat", "a dog"], num_frames=3, height=32, width=32, num_inference_steps=2, seed=0,
            output_type="pt")


def rel(a, b):
    a, b = a.double(), b.double()
    return ((a - b).norm() / b.norm()).item()


def cuda_bf16_pipes(tmp_path, args):
    """(pipe in bf16 on CUDA with backend "auto", its normal-mode video, the bf16 noise yardstick):
    the yardstick is how far the same pipeline's video moves when its temporal kernels run the torch
    reference instead (the same math, another summation order). The tiny random model amplifies
    rounding (its bf16 video is ~0.43 from its fp32 one, S8-run 11), so a fixed bound either sits at
    the noise floor or lets anything pass; measured yardsticks: 0.015 (3 steps), 0.021 (2 steps +
    chunked decode) (S8-run 12), with fast mode 0.015 / 0.020 from normal (S8-run 11)."""
    pipe = make_pipe(tmp_path).to("cuda", torch.bfloat16)
    normal = pipe(**args).frames
    pipe.unet.set_backend("torch")
    noise = rel(pipe(**args).frames, normal)
    pipe.unet.set_backend("auto")
    return pipe, normal, noise


def assert_within_bf16_tolerance(fast, normal, noise):
    """Fast mode may move the video from normal mode's by at most 1.5x the bf16 yardstick."""
    assert rel(fast, normal) <= 1.5 * noise + 1e-3, (rel(fast, normal), noise)


def test_fast_matches_normal_cpu_fp32(tmp_path):
    torch._dynamo.reset()
    pipe = make_pipe(tmp_path)
    normal = pipe(**ARGS).frames
    normal_latents = pipe(**{**ARGS, "output_type": "latent"}).frames
    graphs = []

    def counting_backend(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    cfg = pipe.enable_fast_sampling(compile_backend=counting_backend)
    assert cfg.fuse_qkv and cfg.channels_last and cfg.compile_mode == "default"
    assert pipe.unet.unet.original_attn_processors is not None  # QKV projections fused
    assert pipe.unet.unet.conv_in.weight.is_contiguous(memory_format=torch.channels_last)
    assert pipe.vae.decoder.conv_in.weight.is_contiguous()  # the VAE keeps NCHW (measured faster)
    fast = pipe(**ARGS).frames
    fast_latents = pipe(**{**ARGS, "output_type": "latent"}).frames
    assert len(graphs) == 1, f"expected one UNet graph (fullgraph, no recompiles), got {len(graphs)}"
    assert rel(fast_latents, normal_latents) < 1e-4
    assert rel(fast, normal) < 1e-4
    # a different prompt still changes the video in fast mode (the compiled graph is not frozen)
    other = pipe(**{**ARGS, "prompt": ["a bird", "a dog"]}).frames
    assert rel(other[0], fast[0]) > 1e-3
    torch._dynamo.reset()


def test_custom_ops_trace_into_one_graph_cpu():
    """With the Triton backend (CPU interpreter) the temporal blocks are tfaa custom ops, and
    fullgraph compile of the spatial UNet (hooks included) captures them in the graph."""
    from tfaa_kernels.backends import available_backends

    if "triton" not in available_backends("cpu"):
        pytest.skip("Triton interpreter not available on CPU")
    from tfaa.testing import tiny_unet

    torch._dynamo.reset()
    unet = VideoUNet.from_unet2d(tiny_unet()).eval()
    unet.set_backend("triton")
    graphs = []

    def capture(gm, example_inputs):
        graphs.append(gm)
        return gm.forward

    unet.unet.compile(fullgraph=True, dynamic=False, backend=capture)
    x, ehs = torch.randn(2, 4, 8, 8), torch.randn(2, 77, 32)
    with torch.no_grad():
        unet(x, torch.tensor(10), ehs, num_frames=2)
    assert len(graphs) == 1
    targets = {str(n.target) for n in graphs[0].graph.nodes if n.op == "call_function"}
    assert any("tfaa.temporal_conv1d" in t for t in targets), sorted(targets)
    assert any("tfaa.temporal_attention_fwd" in t for t in targets), sorted(targets)
    torch._dynamo.reset()


def test_opaque_up_block_norms_keep_values_and_keys():
    """The up-block ResNets' norm1 as OpaqueGroupNorm: same UNet output, same state_dict keys,
    channels_last kept; the module alone equals nn.GroupNorm."""
    norm = torch.nn.GroupNorm(4, 8, eps=1e-6)
    with torch.no_grad():
        norm.weight.normal_(), norm.bias.normal_()
    x = torch.randn(3, 8, 5, 6).contiguous(memory_format=torch.channels_last)
    opaque = OpaqueGroupNorm(norm, "torch")
    y = opaque(x)
    torch.testing.assert_close(y, norm(x))
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert opaque.weight is norm.weight and "backend='torch'" in repr(opaque)

    unet = tiny_unet().eval()
    keys = list(unet.state_dict())
    sample = torch.randn(2, unet.config.in_channels, 16, 16)
    ehs = torch.randn(2, 77, unet.config.cross_attention_dim)
    with torch.no_grad():
        before = unet(sample, 10, ehs).sample
        n = make_up_block_norms_opaque(unet, "torch")
        after = unet(sample, 10, ehs).sample
    assert n == sum(len(b.resnets) for b in unet.up_blocks) > 0
    assert all(isinstance(r.norm1, OpaqueGroupNorm) for b in unet.up_blocks for r in b.resnets)
    assert list(unet.state_dict()) == keys
    torch.testing.assert_close(after, before, rtol=1e-5, atol=1e-5)
    desc = FastSamplingConfig(True, True, "reduce-overhead", "inductor", True, True).describe()
    assert "up-block GroupNorms" in desc


def test_enable_twice(tmp_path):
    pipe = make_pipe(tmp_path)
    cfg = pipe.enable_fast_sampling(compile_mode="none")
    assert cfg.compile_mode is None and pipe.fast_sampling is cfg
    assert pipe.enable_fast_sampling(compile_mode="none") is cfg  # same settings: no-op
    with pytest.raises(RuntimeError, match="already enabled"):
        pipe.enable_fast_sampling(compile_mode="none", channels_last=False)


def test_compile_mode_rules():
    assert resolve_compile_mode("auto", torch.device("cpu")) == "default"
    assert resolve_compile_mode("auto", torch.device("cuda")) == "reduce-overhead"
    assert resolve_compile_mode("none", torch.device("cuda")) is None
    with pytest.raises(ValueError, match="CUDA graphs"):
        resolve_compile_mode("reduce-overhead", torch.device("cpu"))
    with pytest.raises(ValueError, match="compile mode must be one of"):
        resolve_compile_mode("fastest", torch.device("cpu"))
    desc = FastSamplingConfig(True, True, "reduce-overhead", "inductor", False).describe()
    assert "fused QKV" in desc and "reduce-overhead" in desc
    # the chunked VAE decode never runs under CUDA graphs (their outputs are overwritten per replay)
    assert vae_compile_mode("reduce-overhead") == "default"
    assert vae_compile_mode("max-autotune") == "max-autotune-no-cudagraphs"
    assert vae_compile_mode("default") == "default"


def test_cli_fast_flag():
    from tfaa.cli import build_parser

    args = build_parser().parse_args(["sample", "--model", "m", "--prompt", "p", "--fast"])
    assert args.fast is True
    assert build_parser().parse_args(["sample", "--model", "m", "--prompt", "p"]).fast is False


@pytest.mark.gpu
def test_fast_matches_normal_cuda_bf16(tmp_path):
    """Inductor + CUDA graphs (reduce-overhead) with the fused kernels, bf16: the same video within
    bf16 tolerance (:func:`assert_within_bf16_tolerance`), on the compiling call and on a replay."""
    torch._dynamo.reset()
    args = {**ARGS, "num_frames": 5, "height": 64, "width": 64, "num_inference_steps": 3}
    pipe, normal, noise = cuda_bf16_pipes(tmp_path, args)
    cfg = pipe.enable_fast_sampling()
    assert cfg.compile_mode == "reduce-overhead" and cfg.compile_backend == "inductor"
    assert cfg.opaque_up_block_norms
    assert isinstance(pipe.unet.unet.up_blocks[-1].resnets[0].norm1, OpaqueGroupNorm)
    first = pipe(**args).frames
    replay = pipe(**args).frames
    assert_within_bf16_tolerance(first, normal, noise)
    assert_within_bf16_tolerance(replay, normal, noise)
    torch._dynamo.reset()


@pytest.mark.gpu
def test_fast_compiled_vae_chunked_decode_cuda_bf16(tmp_path):
    """compile_vae with a decode chunk smaller than the video (chunks 2, 2, 1): every chunk's frames
    survive the next chunk's decode (a CUDA-graphed decoder overwrote them) and match normal mode."""
    torch._dynamo.reset()
    args = {**ARGS, "num_frames": 5, "height": 64, "width": 64, "num_inference_steps": 2,
            "decode_chunk_size": 2}
    pipe, normal, noise = cuda_bf16_pipes(tmp_path, args)
    cfg = pipe.enable_fast_sampling(compile_vae=True)
    assert cfg.compile_vae
    for _ in range(2):  # compiling call, then replays
        fast = pipe(**args).frames
        assert_within_bf16_tolerance(fast, normal, noise)
    torch._dynamo.reset()
