"""Temporal 1D conv microbenchmark (DESIGN.md §1b, §5 shapes S1 and S2), bf16, K=3, one process.

Plain conv: every kernel backend on NCHW and channels_last input, the einops reference
(rearrange + Conv1d + rearrange), Conv3d with kernel (3, 1, 1) on a ``b c f h w`` tensor (diffusers'
TemporalConvLayer; input already in that layout) and a cuBLAS GEMM ``(B*F*H*W, 3*C_in) @ (3*C_in,
C_out)`` with the conv's FLOPs. One layer of the temporal conv block (GroupNorm(32) -> SiLU -> conv):
the fused kernel against the unfused chains (torch GroupNorm + SiLU, then each conv), eager and
torch.compile'd. Forward and forward+backward (grads of x, weight, bias and, for the block layer,
the GroupNorm parameters), medians of ``triton.testing.do_bench``. GroupNorm(32) + SiLU alone:
tfaa_kernels.group_norm_silu's Triton kernels against torch's ``F.silu(F.group_norm(...))``, eager
and torch.compile'd (forward), and forward+backward of the kernels against torch's autograd.

TFLOP/s count exactly the in-clip taps: ``2 * C_out * C_in * H*W * B * (K*F - 2*sum_{j<K//2}(K//2-j))``
for the forward, 3x that for forward+backward (the GEMM row counts its own FLOPs: all K taps). The
HBM floor of the forward is (read x + write y) over the measured copy bandwidth; for GN+SiLU it is
(read x twice + write a once: the statistics pass, then the apply) — a single read + write would
need the whole group slab kept on chip.

    python benchmarks/bench_conv.py [--results benchmarks/RESULTS.md] [--smoke]

``--smoke`` runs tiny shapes once on any device (CPU: Triton interpreter) to check the code path.
"""
from __future__ import annotations

import os
import sys

if "--smoke" in sys.argv and not __import__("torch").cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfaa_kernels as tk  # noqa: E402
from tfaa_kernels import GroupNormSpec, reference  # noqa: E402
from tfaa_kernels.backends import has_impl  # noqa: E402
from common import (copy_bandwidth_gbs, env_line, fmt, graph_ms, markdown_table, median_ms,  # noqa: E402
                    op_bench_device, op_bench_parser, write_section)

# name: (B, F, H, W, C)
SHAPES = {"S1": (2, 16, 64, 64, 320), "S2": (2, 16, 16, 16, 1280)}
SMOKE = {"tiny": (1, 3, 4, 4, 32)}
K = 3
GROUPS = 32


def in_clip_taps(num_frames: int, kk: int) -> int:
    """Number of (frame, tap) pairs whose source frame lies inside the clip."""
    pad = kk // 2
    return sum(1 for f in range(num_frames) for t in range(kk) if 0 <= f + t - pad < num_frames)


def conv_flops(shape) -> float:
    b, f, h, w, c = shape
    return 2.0 * c * c * h * w * b * in_clip_taps(f, K)


def kernel_backends(op="temporal_conv1d"):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return [b for b in ("triton", "cuda") if b in tk.available_backends(dev) and has_impl(op, b)]


class Inputs:
    """x (NCHW and channels_last copies), x as b c f h w, conv and GroupNorm parameters, dy."""

    def __init__(self, shape, dtype, device):
        b, f, h, w, c = shape
        self.num_frames = f
        self.x = torch.randn(b * f, c, h, w, device=device, dtype=dtype, requires_grad=True)
        self.x_cl = self.x.detach().contiguous(memory_format=torch.channels_last).requires_grad_(True)
        self.x5 = self.x.detach().unflatten(0, (b, f)).transpose(1, 2).contiguous().requires_grad_(True)
        self.weight = (torch.randn(c, c, K, device=device, dtype=dtype) / (c * K) ** 0.5).requires_grad_(True)
        self.bias = torch.randn(c, device=device, dtype=dtype, requires_grad=True)
        self.gn_w = (1 + 0.1 * torch.randn(c, device=device, dtype=dtype)).requires_grad_(True)
        self.gn_b = (0.1 * torch.randn(c, device=device, dtype=dtype)).requires_grad_(True)
        self.dy = torch.randn(b * f, c, h, w, device=device, dtype=dtype)
        self.dy_cl = self.dy.contiguous(memory_format=torch.channels_last)
        self.dy5 = self.dy.unflatten(0, (b, f)).transpose(1, 2).contiguous()
        m, kr = b * f * h * w, K * c
        self.a = torch.randn(m, kr, device=device, dtype=dtype, requires_grad=True)
        self.bmat = torch.randn(kr, c, device=device, dtype=dtype, requires_grad=True)
        self.dmat = torch.randn(m, c, device=device, dtype=dtype)


def conv3d(x5, weight, bias):
    """diffusers TemporalConvLayer style: Conv3d (K, 1, 1) over b c f h w, zero padding in f."""
    return F.conv3d(x5, weight[..., None, None], bias, padding=(K // 2, 0, 0))


def plain_candidates(inp: Inputs):
    """name -> (forward fn, inputs to differentiate, dy)."""
    f = inp.num_frames
    w, b = inp.weight, inp.bias
    c = {}
    for be in kernel_backends():
        c[f"{be} (NCHW)"] = ((lambda be: lambda: tk.temporal_conv1d(inp.x, w, b, f, backend=be))(be),
                             (inp.x, w, b), inp.dy)
        c[f"{be} (channels_last)"] = ((lambda be: lambda: tk.temporal_conv1d(inp.x_cl, w, b, f, backend=be))(be),
                                      (inp.x_cl, w, b), inp.dy_cl)
    c["einops reference (rearrange + Conv1d)"] = (lambda: reference.temporal_conv1d(inp.x, w, b, f),
                                                  (inp.x, w, b), inp.dy)
    c["Conv3d (3,1,1) on b c f h w"] = (lambda: conv3d(inp.x5, w, b), (inp.x5, w, b), inp.dy5)
    c["cuBLAS GEMM (BFHW x 3C) @ (3C x C)"] = (lambda: inp.a @ inp.bmat, (inp.a, inp.bmat), inp.dmat)
    return c


def block_candidates(inp: Inputs):
    """One temporal-conv-block layer: GroupNorm(32) -> SiLU -> conv, fused and unfused."""
    f = inp.num_frames
    w, b, gw, gb = inp.weight, inp.bias, inp.gn_w, inp.gn_b
    spec = GroupNormSpec(GROUPS, gw, gb, 1e-5)

    def gn_silu(x):
        return F.silu(F.group_norm(x, GROUPS, gw, gb, 1e-5))

    c = {}
    for be in kernel_backends("temporal_conv1d_gn_silu"):
        for lay, x, dy in (("NCHW", inp.x, inp.dy), ("channels_last", inp.x_cl, inp.dy_cl)):
            c[f"fused {be} GN+SiLU+conv ({lay})"] = (
                (lambda be, x: lambda: tk.temporal_conv1d(x, w, b, f, backend=be, norm=spec, activation="silu"))(be, x),
                (x, w, b, gw, gb), dy)
    c["auto: tk.temporal_conv1d(norm=, activation=) (NCHW)"] = (
        lambda: tk.temporal_conv1d(inp.x, w, b, f, norm=spec, activation="silu"), (inp.x, w, b, gw, gb), inp.dy)
    for be in kernel_backends():
        c[f"torch GN+SiLU, {be} conv (NCHW)"] = (
            (lambda be: lambda: tk.temporal_conv1d(gn_silu(inp.x), w, b, f, backend=be))(be),
            (inp.x, w, b, gw, gb), inp.dy)
    c["torch GN+SiLU, einops reference conv"] = (lambda: reference.temporal_conv1d(gn_silu(inp.x), w, b, f),
                                                 (inp.x, w, b, gw, gb), inp.dy)
    c["torch GN+SiLU, Conv3d (b c f h w)"] = (lambda: conv3d(gn_silu(inp.x5), w, b), (inp.x5, w, b, gw, gb), inp.dy5)
    if torch.cuda.is_available():
        chain = torch.compile(lambda x5, w, b, gw, gb: conv3d(F.silu(F.group_norm(x5, GROUPS, gw, gb, 1e-5)), w, b))
        c["torch.compile(GN+SiLU+Conv3d)"] = (lambda: chain(inp.x5, w, b, gw, gb), (inp.x5, w, b, gw, gb), inp.dy5)
    return c


def gn_candidates(inp: Inputs):
    """GroupNorm(32) + SiLU alone: forward (inference) and, for the forced kernel backend and torch,
    forward+backward (training; dy = the layer's dy)."""
    gw, gb = inp.gn_w.detach(), inp.gn_b.detach()
    x, x_cl = inp.x.detach(), inp.x_cl.detach()
    layouts = (("NCHW", inp.x, inp.dy), ("channels_last", inp.x_cl, inp.dy_cl))
    c = {}
    # "auto" (no grad, eager: the Triton kernels called directly on CUDA) and the forced backend
    # (through the tfaa::group_norm_silu_fwd custom op: the same kernels, more host time a call;
    # with grad its backward kernels, tfaa::group_norm_silu_bwd)
    for lay, xx in (("NCHW", x), ("channels_last", x_cl)):
        c[f"tk.group_norm_silu auto ({lay})"] = (
            (lambda xx: lambda: tk.group_norm_silu(xx, GROUPS, gw, gb))(xx), None, None)
    for be in kernel_backends("group_norm_silu"):
        for lay, xx, dy in layouts:
            c[f"tk.group_norm_silu backend={be!r} ({lay}, custom op)"] = (
                (lambda be, xx: lambda: tk.group_norm_silu(xx, GROUPS, inp.gn_w, inp.gn_b, backend=be))(be, xx),
                (xx, inp.gn_w, inp.gn_b), dy)
    for lay, xx, dy in layouts:
        c[f"torch F.silu(F.group_norm) ({lay})"] = (
            (lambda xx: lambda: F.silu(F.group_norm(xx, GROUPS, inp.gn_w, inp.gn_b, 1e-5)))(xx),
            (xx, inp.gn_w, inp.gn_b), dy)
    if torch.cuda.is_available():
        gn = torch.compile(lambda x, gw, gb: F.silu(F.group_norm(x, GROUPS, gw, gb, 1e-5)))
        c["torch.compile(F.silu(F.group_norm)) (NCHW)"] = (lambda: gn(x, gw, gb), None, None)
    return c


def check_gn(inp: Inputs) -> float:
    """Relative error of the first kernel backend's group_norm_silu (channels_last input) against
    the fp64 reference, on the first clip."""
    bes = kernel_backends("group_norm_silu")
    if not bes:
        return float("nan")
    f = inp.num_frames
    gw, gb = inp.gn_w.detach(), inp.gn_b.detach()
    with torch.no_grad():
        a = tk.group_norm_silu(inp.x_cl, GROUPS, gw, gb, backend=bes[0])[:f].double()
        ref = reference.group_norm_silu(inp.x[:f].double(), GROUPS, gw.double(), gb.double(), 1e-5)
    return ((a - ref).norm() / ref.norm()).item()


def check(inp: Inputs, fused: bool) -> float:
    """Relative error of the first kernel backend's forward (channels_last input; plain conv or the
    fused GroupNorm+SiLU layer) against the fp64 reference, on the first clip."""
    bes = kernel_backends("temporal_conv1d_gn_silu" if fused else "temporal_conv1d")
    if not bes:
        return float("nan")
    f = inp.num_frames
    w, b, gw, gb = (t.detach() for t in (inp.weight, inp.bias, inp.gn_w, inp.gn_b))
    with torch.no_grad():
        if fused:
            y = tk.temporal_conv1d(inp.x_cl, w, b, f, backend=bes[0], norm=GroupNormSpec(GROUPS, gw, gb, 1e-5),
                                   activation="silu")
            ref = reference.group_norm_silu_temporal_conv1d(inp.x[:f].double(), w.double(), b.double(), f, GROUPS,
                                                            gw.double(), gb.double(), 1e-5)
        else:
            y = tk.temporal_conv1d(inp.x_cl, w, b, f, backend=bes[0])
            ref = reference.temporal_conv1d(inp.x[:f].double(), w.double(), b.double(), f)
    y = y[:f].double()
    return ((y - ref).norm() / ref.norm()).item()


def measure(fn, leaves, dy):
    """(forward ms, forward+backward ms, graph forward ms, graph forward+backward ms): eager calls
    and the same calls replayed from a CUDA graph (GPU time alone, common.graph_ms); the
    forward+backward entries are None when there is nothing to differentiate."""
    def fwd_bwd():
        torch.autograd.grad(fn(), leaves, dy)

    def fwd():
        with torch.no_grad():
            fn()
    t_f = median_ms(fwd)
    t_fb = median_ms(fwd_bwd) if leaves is not None else None
    g_f = graph_ms(fwd)
    g_fb = graph_ms(fwd_bwd) if leaves is not None else None
    return t_f, t_fb, g_f, g_fb


def run(shapes, dtype, device):
    bw = copy_bandwidth_gbs()
    rows = []
    for sname, shape in shapes.items():
        inp = Inputs(shape, dtype, device)
        errs = {"conv": check(inp, False), "GN+SiLU+conv layer": check(inp, True), "GN+SiLU": check_gn(inp)}
        flops = conv_flops(shape)
        b, f, h, w, c = shape
        x_ms = (b * f * c * h * w * torch.finfo(dtype).bits / 8) / (bw * 1e9) * 1e3 if bw else None
        for section, cands in (("conv", plain_candidates(inp)), ("GN+SiLU+conv layer", block_candidates(inp)),
                               ("GN+SiLU", gn_candidates(inp))):
            # HBM floors: read x + write y; GN+SiLU: read x twice (statistics, apply) + write a
            floor = (3 if section == "GN+SiLU" else 2) * x_ms if x_ms else None
            for name, (fn, leaves, dy) in cands.items():
                try:
                    t_f, t_fb, g_f, g_fb = measure(fn, leaves, dy)
                except torch.cuda.OutOfMemoryError:
                    torch.cuda.empty_cache()
                    t_f = t_fb = g_f = g_fb = None
                fl = (2.0 * inp.a.shape[0] * inp.a.shape[1] * c) if name.startswith("cuBLAS") else flops
                row = {"shape": sname, "section": section, "name": name, "fwd": t_f, "fwd+bwd": t_fb,
                       "g_fwd": g_f, "g_fwd+bwd": g_fb, "dtype": str(dtype).replace("torch.", ""),
                       "gflop": None if section == "GN+SiLU" else fl / 1e9,  # forward; fwd+bwd = 3x
                       "floor": floor, "err": errs[section]}
                rows.append(row)
                shown = {k: v for k, v in row.items() if k not in ("section", "shape", "dtype")}
                print(section, sname, shown, flush=True)
        del inp
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
    return bw, rows


def render(bw, rows) -> str:
    dtype = rows[0]["dtype"] if rows else ""
    out = [f"Device: {env_line()}; {dtype}, K=3; medians of triton.testing.do_bench (ms). TFLOP/s count "
           "in-clip taps only (the GEMM row: its own 2*M*N*K); fwd+bwd FLOPs = 3x fwd. fwd/fwd+bwd: eager "
           "calls, host time (Python, autograd, launches) included; graph: the same calls captured in a "
           "CUDA graph and replayed, the GPU time alone (TFLOP/s, floor/time and the ratios use it when "
           "present)."]
    if bw:
        out.append(f"Measured copy bandwidth: {bw / 1e3:.2f} TB/s; HBM floor of the forward = read x + write y "
                   "(GN+SiLU: read x twice + write a once).")
    errs = {(r["shape"], r["section"]): r["err"] for r in rows}
    out.append("Kernel forward vs fp64 reference (rel. Frobenius error, channels_last, first clip): "
               + ", ".join(f"{s} {sec} {e:.2e}" for (s, sec), e in errs.items()))
    hdr = ["shape", "impl", "fwd ms", "fwd+bwd ms", "graph fwd ms", "graph fwd+bwd ms", "fwd TFLOP/s",
           "fwd floor/time", "fwd+bwd / fwd", "fwd+bwd TFLOP/s"]
    for section in ("conv", "GN+SiLU+conv layer", "GN+SiLU"):
        out.append(f"\n**{section}**\n")
        body = []
        for r in rows:
            if r["section"] != section:
                continue
            tf = r["g_fwd"] or r["fwd"]
            tfb = r["g_fwd+bwd"] or r["fwd+bwd"]
            fl = r["gflop"]  # GFLOP / ms = TFLOP/s
            body.append([r["shape"], r["name"], fmt(r["fwd"]), fmt(r["fwd+bwd"]), fmt(r["g_fwd"]), fmt(r["g_fwd+bwd"]),
                         fmt(fl / tf, 0) if fl and tf else "—",
                         fmt(r["floor"] / tf, 2) if r["floor"] and tf else "—",
                         fmt(tfb / tf, 2) if tf and tfb else "—",
                         fmt(3 * fl / tfb, 0) if fl and tfb else "—"])
        out.append(markdown_table(hdr, body))
    return "\n".join(out)


def main(argv=None):
    ap = op_bench_parser(__doc__)
    args = ap.parse_args(argv)
    device, dtype = op_bench_device("bench_conv", args.smoke)
    shapes = SMOKE if args.smoke else SHAPES
    bw, rows = run(shapes, dtype, device)
    text = render(bw, rows)
    if args.results and not args.smoke:
        write_section(args.results, "bench_conv", "## Temporal 1D conv (bench_conv.py)\n\n" + text)
    print("\n" + text)


if __name__ == "__main__":
    main()
