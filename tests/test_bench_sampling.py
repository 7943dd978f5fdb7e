"""benchmarks/bench_sampling.py --smoke on the CPU: tiny models through every section (per-step
rows, our normal and fast videos, the AnimateDiff and ModelScope pipelines' videos, the frame sweep
and its plot), so the GPU run's code path is checked everywhere."""
import os
import sys

import torch

sys.path.insert(0, os.path.join(os.path.dirname(__file__), os.pardir, "benchmarks"))
import bench_sampling  # noqa: E402


def test_smoke_covers_every_section(tmp_path):
    torch._dynamo.reset()
    plot = tmp_path / "plot.png"
    args = bench_sampling.build_arg_parser().parse_args(["--smoke", "--video-runs", "1", "--plot", str(plot)])
    args.compile_backend = "aot_eager"
    text = bench_sampling.run(args)
    torch._dynamo.reset()
    for row in ("ours (auto)", "ours (torch)", "UNet2D (spatial only)", "UNetMotionModel (AnimateDiff)",
                "UNet3DConditionModel (ModelScope)", "ours (fast mode, compiled)",
                "ours, normal (backend auto)", "ours, fast (enable_fast_sampling)",
                "AnimateDiffPipeline (UNetMotionModel)", "TextToVideoSDPipeline (UNet3DConditionModel)"):
        assert f"| {row} |" in text, row
    assert "frames vs normal: mean |diff|" in text and "Skipped" not in text
    assert plot.stat().st_size > 0
