"""``tfaa demo``: end to end with --quick (files, report rows, measure on real clips), the output-folder
rules (unwritable, refuse, resume, overwrite), the ablation models' blocks and the measure itself."""
import json
import os

import numpy as np
import pytest
from safetensors import safe_open

from tfaa.cli import main
from tfaa.data.synthetic import ClipSpec, render_clip
from tfaa.demo import VARIANTS, DemoConfig, DemoOutputError, quick_overrides
from tfaa.demo.measure import METRICS, measure_video
from tfaa.demo.output_dir import MARKER, prepare_output_dir
from tfaa.demo.report import slug

QUICK = ["--quick", "--no-progress"]
ROWS = ("real clips",) + tuple(VARIANTS)


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "out"
    assert main(["demo", "--out", str(out), *QUICK]) == 0
    return out


def _report(out):
    with open(out / "report.json", encoding="utf-8") as fh:
        return json.load(fh)


def test_outputs_exist(demo_dir):
    from PIL import Image

    cfg = DemoConfig(**quick_overrides())
    for name in ("report.json", "report.md", "contact_sheet.png", "samples.npz", "data/captions.jsonl", MARKER):
        assert (demo_dir / name).is_file(), name
    sheet = Image.open(demo_dir / "contact_sheet.png")
    rows = len(cfg.prompts) * len(ROWS)  # each prompt: real clip + one row per model
    assert sheet.height >= rows * cfg.size * 3 and sheet.width >= cfg.num_frames * cfg.size * 3
    for prefix in ("real",) + tuple(slug(v) for v in VARIANTS):
        for prompt in cfg.prompts:
            gif = demo_dir / "gifs" / f"{prefix}_{slug(prompt)}.gif"
            assert gif.is_file(), gif
            assert Image.open(gif).n_frames == cfg.num_frames
    md = (demo_dir / "report.md").read_text()
    for row in ROWS:
        assert f"| {row} |" in md


def test_report_has_measure_for_all_rows(demo_dir):
    report = _report(demo_dir)
    cfg = DemoConfig(**quick_overrides())
    assert set(report["measure"]) == set(ROWS)
    n_real = len(cfg.colors) * len(cfg.shapes) * len(cfg.directions)
    for row in ROWS:
        summary = report["measure"][row]
        assert summary["videos"] == (n_real if row == "real clips" else len(cfg.prompts) * cfg.samples_per_prompt)
        for m in METRICS:
            assert summary[m] is None or np.isfinite(summary[m]), (row, m)
    assert len(report["per_video"]) == n_real + len(VARIANTS) * len(cfg.prompts)
    # the reference row: every real clip moves as captioned, half a frame width in all
    real = report["measure"]["real clips"]
    assert real["detected"] == 1.0 and real["direction_agreement"] == 1.0
    assert abs(real["displacement"] - 0.5) < 1.5 / cfg.size


def test_ablation_models_have_only_their_blocks(demo_dir):
    def keys(variant):
        with safe_open(str(demo_dir / "video_models" / slug(variant) / "diffusion_pytorch_model.safetensors"),
                       "pt") as f:
            return list(f.keys())

    def kinds(ks):
        return {k.split(".")[0] for k in ks}

    assert kinds(keys("full")) == {"conv_blocks", "tfaa_blocks"}
    assert kinds(keys("w/o TFAA")) == {"conv_blocks"}
    assert kinds(keys("w/o temporal conv")) == {"tfaa_blocks"}


def test_unwritable_out_is_a_clear_error(tmp_path, capsys):
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    assert main(["demo", "--out", str(blocker / "sub"), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "--out" in err and "not writable" in err
    assert main(["demo", "--out", str(blocker), *QUICK]) == 2
    assert "not writable" in capsys.readouterr().err


def test_refuses_non_empty_folder_without_resume_or_overwrite(demo_dir, capsys):
    before = (demo_dir / MARKER).read_bytes()
    assert main(["demo", "--out", str(demo_dir), *QUICK]) == 2
    err = capsys.readouterr().err
    assert "not empty" in err and "--resume" in err and "--overwrite" in err
    assert (demo_dir / MARKER).read_bytes() == before
    with pytest.raises(SystemExit):  # argparse: mutually exclusive
        main(["demo", "--out", str(demo_dir), "--resume", "--overwrite", *QUICK])


def test_resume_reuses_finished_stages_and_redoes_the_rest(demo_dir, capsys):
    weights = demo_dir / "image_model" / "unet" / "diffusion_pytorch_model.safetensors"
    mtime = weights.stat().st_mtime_ns
    with np.load(demo_dir / "samples.npz") as z:
        old = {k: z[k] for k in z.files}
    state = json.loads((demo_dir / MARKER).read_text())
    del state["stages"]["samples"]  # as if interrupted while sampling
    (demo_dir / MARKER).write_text(json.dumps(state))
    os.remove(demo_dir / "samples.npz")
    assert main(["demo", "--out", str(demo_dir), "--resume", *QUICK]) == 0
    out = capsys.readouterr().out
    assert "[resume] image model" in out and "[resume] samples" not in out
    assert weights.stat().st_mtime_ns == mtime
    with np.load(demo_dir / "samples.npz") as z:  # reloaded weights + seeded noise: the same videos
        for k in old:
            np.testing.assert_array_equal(z[k], old[k])
    assert main(["demo", "--out", str(demo_dir), "--resume", "--seed", "1", *QUICK]) == 2
    assert "seed" in capsys.readouterr().err


def test_overwrite(tmp_path):
    cfg = DemoConfig(**quick_overrides()).to_dict()
    out = tmp_path / "demo"
    prepare_output_dir(str(out), cfg)
    (out / "stale.txt").write_text("old")
    with pytest.raises(DemoOutputError, match="not empty"):
        prepare_output_dir(str(out), cfg)
    state = prepare_output_dir(str(out), cfg, overwrite=True)
    assert state["stages"] == {} and sorted(os.listdir(out)) == [MARKER]
    other = tmp_path / "not_a_demo"
    other.mkdir()
    (other / "keep.txt").write_text("mine")
    with pytest.raises(DemoOutputError, match="not a tfaa demo folder"):
        prepare_output_dir(str(other), cfg, overwrite=True)
    assert (other / "keep.txt").read_text() == "mine"


@pytest.mark.parametrize("train", [False, True])
def test_text_encoder_frozen_by_default_trained_on_request(tmp_path, train):
    import torch

    from tfaa.cli import build_parser
    from tfaa.cli.demo import config_from_args
    from tfaa.demo.data import make_clip_set
    from tfaa.demo.models import build_text_encoder
    from tfaa.demo.train import train_image_model

    flags = ["--train-text-encoder"] if train else []
    cfg = config_from_args(build_parser().parse_args(["demo", "--out", str(tmp_path), *QUICK, *flags])).validate()
    assert cfg.train_text_encoder is train
    clips = make_clip_set(cfg, str(tmp_path / "data"), progress=False)
    _, text_encoder, tokenizer, _ = train_image_model(cfg, clips, torch.device("cpu"), str(tmp_path / "tok"),
                                                      progress=False)
    initial = build_text_encoder(tokenizer, cfg.seed + 1).state_dict()
    unchanged = all(torch.equal(v, initial[k]) for k, v in text_encoder.state_dict().items())
    assert unchanged is not train


def test_measure_ignores_motion_blur_trail():
    clip = render_clip(ClipSpec("circle", "yellow", "up"), num_frames=8, size=32, motion_blur=3)
    m = measure_video(clip, "a yellow circle moving up", ["red", "green", "blue", "yellow"])
    assert m["direction_agreement"] == 1.0 and m["displacement"] == pytest.approx(0.5, abs=0.05)


def test_demo_config_rejects_bad_tfaa_mode_and_blur():
    from tfaa.demo.config import DemoConfigError
    with pytest.raises(DemoConfigError, match="tfaa_mode"):
        DemoConfig(tfaa_mode="global").validate()
    with pytest.raises(DemoConfigError, match="motion_blur"):
        DemoConfig(motion_blur=-1).validate()
    with pytest.raises(DemoConfigError, match="path_start"):
        DemoConfig(path_start=0.0).validate()
    with pytest.raises(DemoConfigError, match="video_min_timestep"):
        DemoConfig(video_min_timestep=1000).validate()
    with pytest.raises(DemoConfigError, match="video_min_timestep"):
        DemoConfig(video_min_timestep=-1).validate()


def test_measure_on_constructed_videos():
    palette = ["red", "blue"]
    clip = render_clip(ClipSpec("square", "red", "right"), num_frames=6, size=32)
    good = measure_video(clip, "a red square moving right", palette)
    assert good["direction_agreement"] == 1.0 and good["displacement"] == pytest.approx(0.5, abs=0.05)
    assert good["jitter_px"] <= 1.0  # whole-pixel rasterization of a constant 3.2 px/frame motion
    backwards = measure_video(clip[::-1], "a red square moving right", palette)
    assert backwards["direction_agreement"] == 0.0 and backwards["displacement"] < -0.4
    static = measure_video(np.repeat(clip[:1], 6, axis=0), "a red square moving right", palette)
    assert static["direction_agreement"] == 0.0 and static["displacement"] == 0.0 and static["frame_change"] == 0.0
    missing = measure_video(clip, "a blue square moving right", palette)  # no blue pixel anywhere
    assert missing["detected"] == 0.0 and np.isnan(missing["displacement"])
