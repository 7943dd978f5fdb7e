"""Fast sampling mode (``pipe.enable_fast_sampling()``, ``tfaa sample --fast``): same videos as
normal sampling (fp32 on CPU through fused QKV + channels_last + fullgraph torch.compile with the
aot_eager backend; bf16 on CUDA through inductor + CUDA graphs), the tfaa custom ops traced into
one graph, and argument errors."""
import pytest
import torch

from tfaa.fast import FastSamplingConfig, resolve_compile_mode, vae_compile_mode
from tfaa.models import VideoUNet
from tfaa.pipeline import TFAAPipeline
from tfaa.testing import tiny_sd_components


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
    bf16 tolerance, on the compiling call and on a CUDA-graph replay."""
    torch._dynamo.reset()
    pipe = make_pipe(tmp_path).to("cuda", torch.bfloat16)
    args = {**ARGS, "num_frames": 5, "height": 64, "width": 64, "num_inference_steps": 3}
    normal = pipe(**args).frames
    cfg = pipe.enable_fast_sampling()
    assert cfg.compile_mode == "reduce-overhead" and cfg.compile_backend == "inductor"
    first = pipe(**args).frames
    replay = pipe(**args).frames
    assert rel(first, normal) < 2e-2, rel(first, normal)
    assert rel(replay, normal) < 2e-2, rel(replay, normal)
    torch._dynamo.reset()


@pytest.mark.gpu
def test_fast_compiled_vae_chunked_decode_cuda_bf16(tmp_path):
    """compile_vae with a decode chunk smaller than the video (chunks 2, 2, 1): every chunk's frames
    survive the next chunk's decode (a CUDA-graphed decoder overwrote them) and match normal mode."""
    torch._dynamo.reset()
    pipe = make_pipe(tmp_path).to("cuda", torch.bfloat16)
    args = {**ARGS, "num_frames": 5, "height": 64, "width": 64, "num_inference_steps": 2,
            "decode_chunk_size": 2}
    normal = pipe(**args).frames
    cfg = pipe.enable_fast_sampling(compile_vae=True)
    assert cfg.compile_vae
    for _ in range(2):  # compiling call, then replays
        fast = pipe(**args).frames
        assert rel(fast, normal) < 2e-2, rel(fast, normal)
    torch._dynamo.reset()
