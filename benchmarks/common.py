"""Shared benchmark utilities: timing (do_bench medians on CUDA), environment header, the
measured copy bandwidth / GEMM rate (the floors' denominators), and RESULTS.md section writing.

Every bench_*.py prints a markdown table last and, with ``--results PATH``, replaces its own
section of RESULTS.md between ``<!-- NAME -->`` and ``<!-- /NAME -->`` markers.
"""
from __future__ import annotations

import os
import platform
import re
import time
from typing import Callable, Optional

import torch


def median_ms(fn: Callable[[], object], warmup_ms: int = 25, rep_ms: int = 100) -> float:
    """Median wall time of ``fn`` in ms: triton.testing.do_bench on CUDA; a plain timer on CPU
    (CPU numbers only prove the code runs: speed claims come from the GPU)."""
    if torch.cuda.is_available():
        import triton.testing
        return float(triton.testing.do_bench(fn, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    fn()
    times = []
    for _ in range(3):
        t0 = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t0) * 1e3)
    return sorted(times)[1]


def graph_ms(fn: Callable[[], object], warmup_ms: int = 25, rep_ms: int = 100) -> Optional[float]:
    """GPU time of ``fn`` without host overhead: ``fn`` is captured once in a CUDA graph (after
    three warm-up calls on a side stream) and the median of do_bench over graph replays is
    returned, in ms. ``median_ms`` of an eager call also contains the host's Python, autograd and
    launch time, which on the lent machines is ~1 ms for any autograd forward+backward (even
    torch's own conv), so it hides kernel speed for sub-millisecond ops. None on CPU or when
    ``fn`` cannot be captured (the reason is printed)."""
    if not torch.cuda.is_available():
        return None
    import triton.testing
    try:
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):
                fn()
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            fn()
    except Exception as exc:  # noqa: BLE001 - reported, the eager number still stands
        print(f"[graph_ms] capture failed: {type(exc).__name__}: {str(exc)[:200]}", flush=True)
        torch.cuda.synchronize()
        return None
    t = float(triton.testing.do_bench(graph.replay, warmup=warmup_ms, rep=rep_ms, return_mode="median"))
    del graph
    return t


def peak_mib(fn: Callable[[], object]) -> Optional[float]:
    """Peak CUDA memory allocated while running ``fn`` once, above what was allocated before (MiB)."""
    if not torch.cuda.is_available():
        return None
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fn()
    torch.cuda.synchronize()
    return (torch.cuda.max_memory_allocated() - base) / 2 ** 20


def copy_bandwidth_gbs(nbytes: int = 2 << 30) -> Optional[float]:
    """Device-to-device copy bandwidth in GB/s, counting bytes read plus written."""
    if not torch.cuda.is_available():
        return None
    src = torch.empty(nbytes // 2, dtype=torch.uint8, device="cuda").random_()
    dst = torch.empty_like(src)
    ms = median_ms(lambda: dst.copy_(src))
    return 2 * src.numel() / (ms * 1e-3) / 1e9


def gemm_tflops(n: int = 8192, dtype=torch.bfloat16) -> Optional[float]:
    if not torch.cuda.is_available():
        return None
    a = torch.randn(n, n, device="cuda", dtype=dtype)
    b = torch.randn(n, n, device="cuda", dtype=dtype)
    ms = median_ms(lambda: a @ b)
    return 2 * n ** 3 / (ms * 1e-3) / 1e12


def env_line() -> str:
    import triton
    dev = torch.cuda.get_device_name() if torch.cuda.is_available() else f"CPU ({platform.processor() or platform.machine()})"
    return (f"{dev}, torch {torch.__version__}, triton {triton.__version__}, "
            f"CUDA {torch.version.cuda}, {time.strftime('%Y-%m-%d')}")


def markdown_table(header, rows) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(c) for c in r) + " |" for r in rows]
    return "\n".join(lines)


def write_section(path: str, name: str, text: str, parent: Optional[str] = None,
                  parent_text: str = "") -> None:
    """Replace (or add) the ``<!-- name -->`` ... ``<!-- /name -->`` section of ``path``. With
    ``parent``, a new section goes at the end of the ``<!-- parent -->`` section, which is created
    (holding ``parent_text``) at the end of the file if missing: one benchmark can keep several
    tables under one heading and rewrite each on its own."""
    block = f"<!-- {name} -->\n{text.rstrip()}\n<!-- /{name} -->"
    old = open(path).read() if os.path.exists(path) else "# Benchmark results\n"
    pat = re.compile(rf"<!-- {re.escape(name)} -->.*?<!-- /{re.escape(name)} -->", re.S)
    if pat.search(old):
        new = pat.sub(lambda _: block, old)
    elif parent and f"<!-- /{parent} -->" in old:
        new = old.replace(f"<!-- /{parent} -->", block + f"\n<!-- /{parent} -->", 1)
    elif parent:
        new = (old.rstrip() + f"\n\n<!-- {parent} -->\n{parent_text.rstrip()}\n\n{block}\n"
               f"<!-- /{parent} -->\n")
    else:
        new = old.rstrip() + "\n\n" + block + "\n"
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        f.write(new)
    os.replace(tmp, path)


def op_bench_parser(doc: str):
    """The arguments every op microbenchmark takes: ``--results PATH`` and ``--smoke``."""
    import argparse
    ap = argparse.ArgumentParser(description=doc.split("\n")[0])
    ap.add_argument("--results", help="write the table into this RESULTS.md section")
    ap.add_argument("--smoke", action="store_true", help="tiny shapes, any device: checks the code path")
    return ap


def op_bench_device(name: str, smoke: bool):
    """(device, dtype) of an op microbenchmark: CUDA bf16, or CPU fp32 for --smoke; exits without
    a GPU unless smoke."""
    import sys
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if not smoke and device != "cuda":
        sys.exit(f"{name} needs a CUDA GPU (use --smoke to check the code path on CPU)")
    return device, (torch.bfloat16 if device == "cuda" else torch.float32)


def fmt(x: Optional[float], digits: int = 3) -> str:
    return "—" if x is None else f"{x:.{digits}f}"
