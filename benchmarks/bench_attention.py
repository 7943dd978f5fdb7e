"""First-adjacent attention microbenchmark: kernels against the baselines a user would write,
all in one process (DESIGN.md §5 shapes), bf16.

Temporal mode (S1, S2): every kernel backend, the einops reference eager and under torch.compile,
and AnimateDiff-style full temporal attention (rearrange to (b l) h f d + SDPA over all frames +
rearrange back); forward and forward+backward; achieved GB/s and the fraction of the HBM floor
(bytes each input read once and each output written once, over the measured copy bandwidth).

Spatial mode (S1, 32x32 C640): every kernel backend, the reference a user would write (cat K/V of
frames prev(f) and 0 + SDPA) and plain per-frame SDPA; TFLOP/s counting 4*L*2L*D per frame and
head; peak memory of forward+backward.

    python benchmarks/bench_attention.py [--results benchmarks/RESULTS.md] [--smoke]

``--smoke`` runs tiny shapes once on any device (CPU: Triton interpreter) to check the code path.
"""
from __future__ import annotations

import os
import sys

if "--smoke" in sys.argv and not __import__("torch").cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

import torch
import torch.nn.functional as F
from einops import rearrange

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import tfaa_kernels as tk  # noqa: E402
from tfaa_kernels import reference  # noqa: E402
from tfaa_kernels.backends import has_impl  # noqa: E402
from common import (copy_bandwidth_gbs, env_line, fmt, markdown_table, median_ms, op_bench_device,  # noqa: E402
                    graph_ms, op_bench_parser, peak_mib,
                    write_section)

# name: (B, F, h, w, C, heads)
SHAPES = {
    "S1": (2, 16, 64, 64, 320, 8),
    "S2": (2, 16, 16, 16, 1280, 8),
    "32x32 C640": (2, 16, 32, 32, 640, 8),
}
SMOKE = {"tiny": (1, 3, 4, 4, 32, 2)}


def packed_inputs(b, f, h, w, c, heads, dtype, device):
    """q, k, v as strided views of one packed (B*F, L, 3C) projection; each view is a leaf that
    requires grad, so forward+backward times the op's gradients, not autograd re-packing them."""
    l, d = h * w, c // heads
    qkv = torch.randn(b * f, l, 3 * c, device=device, dtype=dtype)
    q, k, v = qkv.unflatten(-1, (3, heads, d)).unbind(2)
    return qkv, q.requires_grad_(), k.requires_grad_(), v.requires_grad_()


def animatediff_temporal(q, k, v, num_frames):
    """Full temporal self-attention over all frames at each token (AnimateDiff's motion module
    core): rearrange to (b l) h f d, SDPA, rearrange back."""
    qt, kt, vt = (rearrange(t, "(b f) l h d -> (b l) h f d", f=num_frames) for t in (q, k, v))
    out = F.scaled_dot_product_attention(qt, kt, vt)
    return rearrange(out, "(b l) h f d -> (b f) l h d", l=q.shape[1])


def per_frame_sdpa(q, k, v, num_frames):
    """Plain spatial self-attention of each frame to itself (L keys): the image UNet's cost."""
    out = F.scaled_dot_product_attention(*(t.transpose(1, 2) for t in (q, k, v)))
    return out.transpose(1, 2)


def kernel_backends(mode):
    dev = "cuda" if torch.cuda.is_available() else "cpu"
    return [b for b in ("triton", "cuda") if b in tk.available_backends(dev) and has_impl(f"{mode}_attention", b)]


def candidates(mode):
    """name -> fn(q, k, v, F) for the mode's kernels and baselines."""
    c = {f"tfaa {b}": (lambda b: lambda q, k, v, f: tk.first_adjacent_attention(q, k, v, f, mode, backend=b))(b)
         for b in kernel_backends(mode)}
    if mode == "temporal":
        ref = lambda q, k, v, f: reference.first_adjacent_attention(q, k, v, f, "temporal")  # noqa: E731
        c["einops reference"] = ref
        if torch.cuda.is_available():
            c["reference + torch.compile"] = torch.compile(ref)
        c["AnimateDiff full temporal (SDPA)"] = animatediff_temporal
    else:
        c["cat K/V + SDPA (reference)"] = lambda q, k, v, f: reference.first_adjacent_attention(q, k, v, f, "spatial")
        c["per-frame SDPA (L keys)"] = per_frame_sdpa
    return c


def measure(name, fn, shape, mode, dtype, device, bw_gbs):
    b, f, h, w, c, heads = shape
    qkv, q, k, v = packed_inputs(*shape, dtype, device)
    dout = torch.randn(b * f, h * w, heads, c // heads, device=device, dtype=dtype)
    fwd = lambda: fn(q, k, v, f)  # noqa: E731

    def fwd_bwd():
        out = fn(q, k, v, f)
        torch.autograd.grad(out, (q, k, v), dout)
    with torch.no_grad():
        # every timed implementation must compute the op: compare with the fp32 reference once
        ref_mode = "temporal" if name == "AnimateDiff full temporal (SDPA)" or mode == "temporal" else mode
        err = None
        if not name.startswith(("AnimateDiff", "per-frame")):
            ref = reference.first_adjacent_attention(q.float(), k.float(), v.float(), f, ref_mode)
            err = ((fwd().float() - ref).norm() / ref.norm()).item()
            del ref
        t_f = median_ms(fwd)
    t_fb = median_ms(fwd_bwd)
    mem = peak_mib(fwd_bwd)

    def fwd_nograd():
        with torch.no_grad():
            fn(q, k, v, f)
    g_f, g_fb = graph_ms(fwd_nograd), graph_ms(fwd_bwd)
    elem = b * f * h * w * c * torch.finfo(dtype).bits // 8       # bytes of one of q/k/v/out
    row = {"name": name, "fwd": t_f, "fwd+bwd": t_fb, "mem": mem, "err": err, "g_fwd": g_f, "g_fwd+bwd": g_fb}
    if mode == "temporal":
        row["GB/s"] = 4 * elem / (t_f * 1e-3) / 1e9
        row["floor"] = (4 * elem / (bw_gbs * 1e9) * 1e3) if bw_gbs else None
        row["fb_floor"] = (11 * elem / (bw_gbs * 1e9) * 1e3) if bw_gbs else None
    else:
        l, d = h * w, c // heads
        flops = 4 * l * 2 * l * d * b * f * heads
        row["TFLOP/s"] = flops / (t_f * 1e-3) / 1e12
        row["fb TFLOP/s"] = 3.5 * flops / (t_fb * 1e-3) / 1e12   # bwd = 2.5x fwd FLOPs
    return row


def run(shapes, modes, dtype, device):
    bw = copy_bandwidth_gbs()
    sections = []
    for mode in modes:
        rows = []
        for sname, shape in shapes.items():
            if mode == "temporal" and sname == "32x32 C640":
                continue
            if mode == "spatial" and sname == "S2":
                continue
            for name, fn in candidates(mode).items():
                try:
                    r = measure(name, fn, shape, mode, dtype, device, bw)
                except torch.cuda.OutOfMemoryError:
                    r = {"name": name + " (OOM)"}
                    torch.cuda.empty_cache()
                r["shape"] = sname
                rows.append(r)
                print(mode, sname, r, flush=True)
        sections.append((mode, rows))
    return bw, sections


def _err(r) -> str:
    return "—" if r.get("err") is None else f"{r['err']:.1e}"


_DTYPE_NAME = {torch.bfloat16: "bf16", torch.float16: "fp16", torch.float32: "fp32"}


def render(bw, mode, rows, dtype) -> str:
    """Markdown for one mode's rows: the run's device line, then the table."""
    out = [f"**{mode} mode.** Device: {env_line()}; {_DTYPE_NAME.get(dtype, dtype)}; medians of triton.testing.do_bench (ms); "
           "rel.err: forward output against the fp32 reference on the same inputs. fwd/fwd+bwd: eager "
           "calls (host Python/autograd time included); graph: the same calls captured in a CUDA graph "
           "and replayed (GPU time alone, benchmarks/common.py graph_ms)."]
    if bw:
        out.append(f"Measured copy bandwidth: {bw / 1e3:.2f} TB/s (read + write).")
    out.append("")
    if mode == "temporal":
        hdr = ["shape", "impl", "fwd ms", "fwd GB/s", "fwd floor/time", "fwd+bwd ms", "fwd+bwd floor/time",
               "graph fwd ms", "graph fwd+bwd ms", "peak MiB fwd+bwd", "rel.err"]
        body = [[r["shape"], r["name"], fmt(r.get("fwd")), fmt(r.get("GB/s"), 0),
                 fmt(r["floor"] / r["fwd"], 2) if r.get("floor") and r.get("fwd") else "—",
                 fmt(r.get("fwd+bwd")),
                 fmt(r["fb_floor"] / r["fwd+bwd"], 2) if r.get("fb_floor") and r.get("fwd+bwd") else "—",
                 fmt(r.get("g_fwd")), fmt(r.get("g_fwd+bwd")), fmt(r.get("mem"), 0), _err(r)] for r in rows]
    else:
        hdr = ["shape", "impl", "fwd ms", "fwd TFLOP/s", "fwd+bwd ms", "fwd+bwd TFLOP/s", "graph fwd ms",
               "graph fwd+bwd ms", "peak MiB fwd+bwd", "rel.err"]
        body = [[r["shape"], r["name"], fmt(r.get("fwd")), fmt(r.get("TFLOP/s"), 1), fmt(r.get("fwd+bwd")),
                 fmt(r.get("fb TFLOP/s"), 1), fmt(r.get("g_fwd")), fmt(r.get("g_fwd+bwd")), fmt(r.get("mem"), 0),
                 _err(r)] for r in rows]
    out.append(markdown_table(hdr, body))
    return "\n".join(out)


_HEADING = ("## First-adjacent attention (bench_attention.py)\n\nOne table per mode, each rewritten only "
            "by a run of that mode (`--modes`); its first line names the run.")


def main(argv=None):
    ap = op_bench_parser(__doc__)
    ap.add_argument("--modes", default="temporal,spatial")
    args = ap.parse_args(argv)
    device, dtype = op_bench_device("bench_attention", args.smoke)
    shapes = SMOKE if args.smoke else SHAPES
    bw, sections = run(shapes, args.modes.split(","), dtype, device)
    for mode, rows in sections:
        text = render(bw, mode, rows, dtype)
        if args.results and not args.smoke:
            # one section per mode: a run of some modes leaves the other modes' tables as they are
            write_section(args.results, f"bench_attention:{mode}", text, parent="bench_attention",
                          parent_text=_HEADING)
        print("\n" + text)


if __name__ == "__main__":
    main()
