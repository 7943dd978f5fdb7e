"""``tfaa sample``: single prompt (GIF/MP4), prompts file, 2-process split on CPU, errors."""
import os
import subprocess
import sys

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from tfaa.cli import SUBCOMMANDS, build_parser, main
from tfaa.models import VideoUNet
from tfaa.pipeline import TFAAPipeline
from tfaa.testing import tiny_sd_components

PROMPTS = ["the cat", "a dog", "runs the dog", "the and", "a cat runs"]
TINY = ["--frames", "2", "--steps", "2", "--height", "32", "--width", "32", "--device", "cpu"]


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    """A saved tiny TFAAPipeline and its temporal weights (random, non-zero)."""
    root = tmp_path_factory.mktemp("cli_model")
    c = tiny_sd_components(str(root))
    c["unet"] = VideoUNet.from_unet2d(c["unet"])
    with torch.no_grad():
        for p in c["unet"].temporal_parameters():
            p.normal_(0, 0.05)
    TFAAPipeline(**c).save_pretrained(root / "model")
    c["unet"].save_temporal_weights(root / "temporal")
    return root


def run_cli(args, cwd, launcher=()):
    env = dict(os.environ, OMP_NUM_THREADS="1", TOKENIZERS_PARALLELISM="false")
    return subprocess.run([sys.executable, *launcher, "-m", "tfaa", *args], capture_output=True, text=True,
                          cwd=cwd, env=env, timeout=300)


def test_parser_lists_available_subcommands():
    choices = build_parser()._subparsers._group_actions[0].choices
    assert "sample" in choices
    assert set(choices) <= set(SUBCOMMANDS)
    with pytest.raises(SystemExit):
        main(["sample", "--prompt", "x"])  # --model is required


def test_sample_single_prompt_gif_in_process(model_dir, tmp_path, capsys):
    out = tmp_path / "v.gif"
    rc = main(["sample", "--model", str(model_dir / "model"), "--temporal-weights", str(model_dir / "temporal"),
               "--prompt", "the cat", "--seed", "5", "--out", str(out), "--backend", "torch", *TINY])
    assert rc == 0
    frames = iio.imread(out, index=None)
    assert frames.shape[:3] == (2, 32, 32)
    # the same video as the pipeline with seed 5
    pipe = TFAAPipeline.from_sd(model_dir / "model")
    pipe.set_progress_bar_config(disable=True)
    ref = pipe("the cat", num_frames=2, height=32, width=32, num_inference_steps=2, seed=5).frames[0]
    ref_u8 = (np.clip(ref, 0, 1) * 255 + 0.5).astype(np.uint8)
    assert np.abs(frames[..., :3].astype(int) - ref_u8.astype(int)).mean() < 8  # GIF palette quantisation


def test_sample_mp4_via_console_entry(model_dir, tmp_path):
    try:
        import av  # noqa: F401
    except ImportError:
        pytest.importorskip("imageio_ffmpeg")
    r = run_cli(["sample", "--model", str(model_dir / "model"), "--prompt", "a dog", "--out", "clip.mp4", *TINY],
                cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    assert iio.imread(tmp_path / "clip.mp4", plugin="pyav").shape[0] == 2


def test_mp4_without_any_writer_gives_a_clear_error(tmp_path, monkeypatch):
    from tfaa.video_io import save_video

    monkeypatch.setitem(sys.modules, "av", None)
    monkeypatch.setitem(sys.modules, "imageio_ffmpeg", None)
    with pytest.raises(RuntimeError, match="pip install av.*imageio-ffmpeg"):
        save_video(np.zeros((2, 8, 8, 3)), tmp_path / "x.mp4")
    with pytest.raises(ValueError, match=r"\.gif"):
        save_video(np.zeros((2, 8, 8, 3)), tmp_path / "x.avi")


def _check_one_output_per_prompt(out_dir, stdout):
    names = sorted(os.listdir(out_dir))
    assert [int(n.split("_")[0]) for n in names] == list(range(len(PROMPTS))), names
    assert all(n.endswith(".gif") for n in names)
    for name in names:  # each video reported written exactly once (lines of 2 processes may interleave)
        assert stdout.count(os.path.join(os.path.basename(out_dir), name) + ":") == 1, stdout


def test_prompts_file_split_across_two_cpu_processes(model_dir, tmp_path):
    (tmp_path / "prompts.txt").write_text("\n".join(PROMPTS[:2]) + "\n\n" + "\n".join(PROMPTS[2:]) + "\n")
    launcher = ("-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2")
    r = run_cli(["sample", "--model", str(model_dir / "model"), "--prompts-file", "prompts.txt",
                 "--out", "videos", *TINY], cwd=tmp_path, launcher=launcher)
    assert r.returncode == 0, r.stderr[-3000:]
    _check_one_output_per_prompt(tmp_path / "videos", r.stdout)
    assert "[process 0]" in r.stdout and "[process 1]" in r.stdout, r.stdout
    # one process gives the same videos (seed + index per prompt)
    r1 = run_cli(["sample", "--model", str(model_dir / "model"), "--prompts-file", "prompts.txt",
                  "--out", "videos1", *TINY], cwd=tmp_path)
    assert r1.returncode == 0, r1.stderr[-3000:]
    _check_one_output_per_prompt(tmp_path / "videos1", r1.stdout)
    for name in os.listdir(tmp_path / "videos"):
        np.testing.assert_array_equal(iio.imread(tmp_path / "videos" / name, index=None),
                                      iio.imread(tmp_path / "videos1" / name, index=None))


@pytest.mark.parametrize("args, message", [
    (["--model", "{root}/nowhere", "--prompt", "x"], "--model directory"),
    (["--model", "{root}/model", "--prompt", "x", "--frames", "0"], "--frames must be >= 1"),
    (["--model", "{root}/model", "--prompt", "x", "--height", "30"], "--height must be a positive multiple of 8"),
    (["--model", "{root}/model", "--prompts-file", "{root}/none.txt"], "does not exist"),
    (["--model", "{root}/model", "--prompt", "x", "--out", "v.avi"], "must end in .gif or .mp4"),
])
def test_bad_arguments(model_dir, args, message, capsys):
    args = [a.format(root=model_dir) for a in args]
    with pytest.raises((SystemExit, ValueError, FileNotFoundError)) as err:
        main(["sample", *args])
    assert message in str(err.value)


def test_temporal_weights_that_do_not_fit(model_dir, tmp_path):
    c = tiny_sd_components(str(tmp_path))
    VideoUNet.from_unet2d(c["unet"], conv_num_layers=2).save_temporal_weights(tmp_path / "tw2")
    with pytest.raises(ValueError, match="unexpected keys|missing keys"):
        main(["sample", "--model", str(model_dir / "model"), "--temporal-weights", str(tmp_path / "tw2"),
              "--prompt", "x", "--out", str(tmp_path / "v.gif"), *TINY])
