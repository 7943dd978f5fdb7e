"""The reference ops against explicit float64 loops over frames, and fp64 gradcheck."""
import pytest
import torch

from tfaa_kernels import reference
from helpers import assert_close, leaf_qkv


def loop_attention(q, k, v, num_frames, mode, scale=None):
    """The definition of DESIGN.md §1a, frame by frame, in float64."""
    q, k, v = q.double(), k.double(), v.double()
    d = q.shape[-1]
    scale = d ** -0.5 if scale is None else scale
    out = torch.empty_like(q)
    for n in range(q.shape[0]):
        b, f = divmod(n, num_frames)
        p, first = b * num_frames + max(f - 1, 0), b * num_frames
        if mode == "temporal":
            keys = torch.stack([k[p], k[first]], dim=-2)            # L H 2 D
            vals = torch.stack([v[p], v[first]], dim=-2)
            w = (torch.einsum("lhd,lhjd->lhj", q[n], keys) * scale).softmax(-1)
            out[n] = torch.einsum("lhj,lhjd->lhd", w, vals)
        else:
            keys = torch.cat([k[p], k[first]], dim=0)               # 2L H D
            vals = torch.cat([v[p], v[first]], dim=0)
            w = (torch.einsum("lhd,mhd->hlm", q[n], keys) * scale).softmax(-1)
            out[n] = torch.einsum("hlm,mhd->lhd", w, vals)
    return out


def loop_conv(x, weight, bias, num_frames):
    x, weight = x.double(), weight.double()
    kk = weight.shape[-1]
    y = torch.zeros(x.shape[0], weight.shape[0], *x.shape[2:], dtype=torch.float64)
    for n in range(x.shape[0]):
        b, f = divmod(n, num_frames)
        if bias is not None:
            y[n] += bias.double()[:, None, None]
        for t in range(kk):
            src = f + t - kk // 2
            if 0 <= src < num_frames:
                y[n] += torch.einsum("oc,chw->ohw", weight[:, :, t], x[b * num_frames + src])
    return y


@pytest.mark.parametrize("mode", ["temporal", "spatial"])
@pytest.mark.parametrize("num_frames", [1, 2, 3, 5, 16])
def test_attention_matches_loop(mode, num_frames):
    q, k, v = leaf_qkv(2 * num_frames, 7, 2, 8)
    out = reference.first_adjacent_attention(q, k, v, num_frames, mode)
    assert_close(out, loop_attention(q, k, v, num_frames, mode), 1e-5, mode)


@pytest.mark.parametrize("mode", ["temporal", "spatial"])
def test_attention_custom_scale(mode):
    q, k, v = leaf_qkv(6, 5, 2, 8)
    out = reference.first_adjacent_attention(q, k, v, 3, mode, scale=0.7)
    assert_close(out, loop_attention(q, k, v, 3, mode, scale=0.7), 1e-5, mode)


def test_first_frame_is_its_own_previous():
    """prev(0) = 0 (never wraps): with F >= 2, frame 0 sees only its own keys and values, so its
    output is v itself in temporal mode."""
    q, k, v = leaf_qkv(4, 3, 1, 4)
    out = reference.first_adjacent_attention(q, k, v, 4, "temporal")
    assert_close(out[0], v[0].detach(), 1e-6)


@pytest.mark.parametrize("num_frames", [1, 2, 3, 5, 16])
@pytest.mark.parametrize("kk", [1, 3, 5])
def test_conv_matches_loop(num_frames, kk):
    x = torch.randn(2 * num_frames, 5, 3, 4)
    w = torch.randn(6, 5, kk)
    b = torch.randn(6)
    assert_close(reference.temporal_conv1d(x, w, b, num_frames), loop_conv(x, w, b, num_frames), 1e-5)
    assert_close(reference.temporal_conv1d(x, w, None, num_frames), loop_conv(x, w, None, num_frames), 1e-5)


def test_conv_keeps_channels_last():
    x = torch.randn(6, 4, 3, 5).to(memory_format=torch.channels_last)
    w = torch.randn(4, 4, 3)
    y = reference.temporal_conv1d(x, w, None, 3)
    assert y.is_contiguous(memory_format=torch.channels_last)
    assert_close(y, loop_conv(x, w, None, 3), 1e-5)


@pytest.mark.parametrize("mode", ["temporal", "spatial"])
def test_attention_gradcheck(mode):
    q, k, v = leaf_qkv(3 * 2, 3, 2, 4, dtype=torch.float64)
    assert torch.autograd.gradcheck(
        lambda a, b, c: reference.first_adjacent_attention(a, b, c, 3, mode), (q, k, v))


def test_conv_gradcheck():
    x = torch.randn(2 * 3, 3, 2, 2, dtype=torch.float64, requires_grad=True)
    w = torch.randn(4, 3, 3, dtype=torch.float64, requires_grad=True)
    b = torch.randn(4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(lambda x, w, b: reference.temporal_conv1d(x, w, b, 3), (x, w, b))
