"""tfaa.data: decoding, sampling, transforms, caption files, layouts, skipping, latent cache, synthetic data."""
import json
import logging
import os

import numpy as np
import pytest
import torch

from tfaa.data import (ClipTooShortError, LatentDataset, VideoReadError, VideoTextDataset, cache_latents,
                       camel_case_to_caption, collate_video_text, encode_pixels, frames_to_tensor,
                       make_synthetic_dataset, msrvtt_records, read_caption_file, read_frames, render_clip,
                       sample_frame_indices, ucf101_records)
from tfaa.data.synthetic import COLORS, ClipSpec


@pytest.fixture(scope="module")
def gif_data(tmp_path_factory):
    d = tmp_path_factory.mktemp("gifs")
    return make_synthetic_dataset(str(d), num_videos=4, num_frames=10, size=32, seed=1, format="gif")


def test_sample_indices_first_frames_and_fps():
    # thesis setting: first 8 frames at 24 fps
    assert sample_frame_indices(100, 24.0, 8, 24.0) == list(range(8))
    # 48 fps source -> every 2nd frame; 12 fps source -> frames repeat
    assert sample_frame_indices(100, 48.0, 4, 24.0) == [0, 2, 4, 6]
    assert sample_frame_indices(100, 12.0, 4, 24.0) == [0, 0, 1, 1]
    # UCF-101 is 25 fps: frame i at time i/24 -> source floor(i*25/24)
    assert sample_frame_indices(100, 25.0, 8, 24.0) == [int(np.floor(i * 25 / 24 + 1e-6)) for i in range(8)]
    assert sample_frame_indices(100, 24.0, 3, 24.0, stride=3) == [0, 3, 6]
    assert sample_frame_indices(100, 30.0, 3, None, stride=2) == [0, 2, 4]
    with pytest.raises(ClipTooShortError):
        sample_frame_indices(7, 24.0, 8, 24.0)


def test_random_start_is_seeded_and_in_range():
    a = sample_frame_indices(50, 24.0, 8, 24.0, random_start=True, rng=np.random.default_rng(3))
    b = sample_frame_indices(50, 24.0, 8, 24.0, random_start=True, rng=np.random.default_rng(3))
    assert a == b and a[-1] < 50 and a == list(range(a[0], a[0] + 8))
    starts = {sample_frame_indices(50, 24.0, 8, 24.0, random_start=True, rng=np.random.default_rng(s))[0]
              for s in range(20)}
    assert len(starts) > 3


def test_frames_to_tensor_resize_crop_range():
    frames = [np.full((30, 60, 3), 255, np.uint8) for _ in range(2)]
    frames[0][:, :8] = 0  # left edge black: cropped away by the center crop
    x = frames_to_tensor(frames, size=16)
    assert x.shape == (2, 3, 16, 16) and x.dtype == torch.float32
    assert torch.allclose(x, torch.ones_like(x), atol=1e-5)
    y = frames_to_tensor([np.zeros((8, 8, 3), np.uint8)], size=8)
    assert torch.equal(y, -torch.ones_like(y))


@pytest.mark.parametrize("fmt", ["gif", "frames", "mp4"])
def test_synthetic_formats_decode(tmp_path, fmt):
    cap = make_synthetic_dataset(str(tmp_path), num_videos=2, num_frames=9, size=32, seed=0, format=fmt)
    recs = read_caption_file(cap)
    assert len(recs) == 2
    frames, fps = read_frames(recs[0].path)
    assert len(frames) == 9 and frames[0].shape == (32, 32, 3)
    assert fps == pytest.approx({"gif": 25.0, "frames": 24.0, "mp4": 24.0}[fmt])
    ref = render_clip(ClipSpec(**{k: v for k, v in json.loads(open(cap).readline()).items()
                                  if k in ("shape", "color", "direction")},
                               background=tuple(int(c) for c in frames[0][0, 0])), 9, 32)
    tol = 0 if fmt != "mp4" else 40  # lossy codec
    assert np.abs(frames[4].astype(int) - ref[4].astype(int)).mean() <= tol + 1e-9


def test_synthetic_is_deterministic_and_captioned(tmp_path):
    a = make_synthetic_dataset(str(tmp_path / "a"), num_videos=5, size=16, seed=7)
    b = make_synthetic_dataset(str(tmp_path / "b"), num_videos=5, size=16, seed=7)
    la, lb = open(a).read(), open(b).read()
    assert la == lb
    for line in la.splitlines():
        obj = json.loads(line)
        assert obj["caption"] == f"a {obj['color']} {obj['shape']} moving {obj['direction']}"
    assert open(tmp_path / "a/videos/000003.gif", "rb").read() == open(tmp_path / "b/videos/000003.gif", "rb").read()
    c = make_synthetic_dataset(str(tmp_path / "c"), num_videos=5, size=16, seed=8)
    assert open(c).read() != la


def test_motion_direction_is_visible():
    clip = render_clip(ClipSpec("square", "red", "right"), num_frames=4, size=32).astype(float)
    col = lambda f: (clip[f, :, :, 0] > 100).nonzero()[1].mean()  # noqa: E731
    assert col(3) > col(0) + 8


def test_path_start_moves_the_path_to_the_direction_side():
    centre = lambda clip: (clip[..., 0] > 100).nonzero()  # noqa: E731
    for direction, axis, sign in (("right", 1, 1), ("up", 0, -1)):
        spec = ClipSpec("square", "red", direction)
        centred = render_clip(spec, num_frames=8, size=32)
        shifted = render_clip(spec, num_frames=8, size=32, path_start=-0.25)
        pos = lambda clip, f: centre(clip[f])[axis].mean() - 16  # noqa: E731 (offset from the frame centre)
        assert pos(centred, 0) == pytest.approx(-pos(centred, 7), abs=1) and sign * pos(centred, 7) > 6
        # a quarter of the 16 px travel before the centre at the start, three quarters after it at the end
        assert sign * pos(shifted, 0) == pytest.approx(-4, abs=1) and sign * pos(shifted, 7) == pytest.approx(12, abs=1)
        assert (shifted[7] != np.array(spec.background, np.uint8)).any(-1).sum() == \
            (centred[7] != np.array(spec.background, np.uint8)).any(-1).sum()  # still whole inside the frame
    for bad in (-0.6, -0.2):
        with pytest.raises(ValueError, match="path_start"):
            render_clip(ClipSpec("square", "red", "up"), path_start=bad)


def test_motion_blur_trails_behind_and_keeps_the_shape():
    spec = ClipSpec("square", "red", "right")
    sharp = render_clip(spec, num_frames=8, size=32)
    blurred = render_clip(spec, num_frames=8, size=32, motion_blur=3)
    shape = (sharp != np.array(spec.background, np.uint8)).any(-1)
    assert np.array_equal(blurred[shape], sharp[shape])  # the shape itself is unchanged
    trail = (blurred != sharp).any(-1)
    assert trail.any() and not (trail & shape).any()
    ys, xs = trail[3].nonzero()
    cols_shape = shape[3].nonzero()[1]
    assert xs.mean() < cols_shape.mean() and set(ys) <= set(shape[3].nonzero()[0])  # behind, same rows
    # the trail is far closer to the background than to the shape colour (colour tracking ignores it)
    r = blurred[trail][:, 0].astype(int)
    assert (r - spec.background[0] < COLORS["red"][0] - r).all()
    with pytest.raises(ValueError, match="motion_blur"):
        render_clip(spec, motion_blur=-1)


def test_dataset_sample_and_collate(gif_data):
    ds = VideoTextDataset(read_caption_file(gif_data), num_frames=8, size=16, target_fps=24)
    s = ds[1]
    assert s["pixel_values"].shape == (8, 3, 16, 16) and s["caption"].startswith("a ")
    assert -1 <= s["pixel_values"].min() and s["pixel_values"].max() <= 1 and s["skipped"] == []
    batch = collate_video_text([ds[0], ds[1]])
    assert batch["pixel_values"].shape == (2, 8, 3, 16, 16) and batch["index"].tolist() == [0, 1]


def test_caption_dropout_deterministic_per_epoch(gif_data):
    recs = read_caption_file(gif_data)
    ds = VideoTextDataset(recs * 10, num_frames=2, size=8, caption_dropout=0.5, seed=0)
    caps0 = [ds[i]["caption"] for i in range(len(ds))]
    assert 5 < sum(c == "" for c in caps0) < 35
    assert caps0 == [ds[i]["caption"] for i in range(len(ds))]
    ds.set_epoch(1)
    assert caps0 != [ds[i]["caption"] for i in range(len(ds))]
    none = VideoTextDataset(recs, num_frames=2, size=8, caption_dropout=0.0)
    assert all(none[i]["caption"] for i in range(len(none)))


def test_corrupt_missing_and_short_videos_are_skipped_and_counted(tmp_path, gif_data, caplog):
    good = read_caption_file(gif_data)
    (tmp_path / "bad.mp4").write_bytes(b"not a video at all")
    (tmp_path / "trunc.gif").write_bytes(open(good[0].path, "rb").read()[:60])
    lines = [{"path": "bad.mp4", "caption": "x"}, {"path": good[0].path, "caption": "good"},
             {"path": "missing.webm", "caption": "y"}, {"path": "trunc.gif", "caption": "z"}]
    cap = tmp_path / "c.jsonl"
    cap.write_text("".join(json.dumps(x) + "\n" for x in lines))
    ds = VideoTextDataset(read_caption_file(str(cap)), num_frames=8, size=16)
    with caplog.at_level(logging.WARNING, logger="tfaa.data.dataset"):
        s = ds[0]
    assert s["caption"] == "good" and s["index"] == 1
    assert [p for p, _ in s["skipped"]] == [str(tmp_path / "bad.mp4")]
    assert "bad.mp4" in caplog.text
    s2 = ds[2]  # missing -> truncated -> wraps to bad (known) -> good
    assert s2["index"] == 1 and len(s2["skipped"]) == 3
    assert ds.skip_counter.count == 3 and set(ds.skip_counter.by_reason) == {"unreadable"}
    short = VideoTextDataset(good, num_frames=20, size=16)
    with pytest.raises(RuntimeError, match="none of the 4 videos"):
        short[0]
    assert short.skip_counter.by_reason["too_short"] == 4
    with pytest.raises(VideoReadError, match="no such file"):
        read_frames(str(tmp_path / "nope.mp4"))


def test_empty_and_bad_caption_files(tmp_path):
    with pytest.raises(ValueError, match="no videos"):
        VideoTextDataset([], num_frames=2)
    bad_csv = tmp_path / "c.csv"
    bad_csv.write_text("file,text\na.gif,hello\n")
    with pytest.raises(ValueError, match="'path' and 'caption'"):
        read_caption_file(str(bad_csv))
    bad_jsonl = tmp_path / "c.jsonl"
    bad_jsonl.write_text('{"path": "a.gif", "caption": "x"}\n{oops\n')
    with pytest.raises(ValueError, match=r"c.jsonl:2"):
        read_caption_file(str(bad_jsonl))
    with pytest.raises(FileNotFoundError):
        read_caption_file(str(tmp_path / "none.csv"))


def test_csv_captions_merge(tmp_path):
    (tmp_path / "c.csv").write_text("path,caption\nv/a.mp4,one\nv/a.mp4,two\nv/b.mp4,three\n")
    recs = read_caption_file(str(tmp_path / "c.csv"))
    assert [r.captions for r in recs] == [("one", "two"), ("three",)]
    assert recs[0].path == os.path.join(str(tmp_path), "v/a.mp4")


def test_camel_case_captions():
    assert camel_case_to_caption("ApplyEyeMakeup") == "apply eye makeup"
    assert camel_case_to_caption("YoYo") == "yo yo"
    assert camel_case_to_caption("PlayingDaf") == "playing daf"
    assert camel_case_to_caption("TaiChi") == "tai chi"


def test_ucf101_layout(tmp_path, gif_data):
    src = read_caption_file(gif_data)[0].path
    for cls in ("ApplyEyeMakeup", "YoYo"):
        (tmp_path / cls).mkdir()
        for g in (1, 2):
            os.symlink(src, tmp_path / cls / f"v_{cls}_g0{g}_c01.gif")
    recs = ucf101_records(str(tmp_path))
    assert [r.captions[0] for r in recs] == ["apply eye makeup"] * 2 + ["yo yo"] * 2
    split = tmp_path / "trainlist01.txt"
    split.write_text("YoYo/v_YoYo_g02_c01.gif 101\n")
    recs = ucf101_records(str(tmp_path), str(split))
    assert len(recs) == 1 and recs[0].path.endswith("v_YoYo_g02_c01.gif")
    ds = VideoTextDataset(recs, num_frames=4, size=16)
    assert ds[0]["caption"] == "yo yo"


def test_msrvtt_layout(tmp_path, gif_data):
    vids = tmp_path / "videos"
    vids.mkdir()
    cap = make_synthetic_dataset(str(tmp_path / "syn"), num_videos=2, num_frames=9, size=16, format="mp4")
    for i, r in enumerate(read_caption_file(cap)):
        os.symlink(r.path, vids / f"video{i}.mp4")
    ann = {"videos": [{"video_id": "video0", "split": "train"}, {"video_id": "video1", "split": "test"}],
           "sentences": [{"video_id": "video0", "caption": "a cat", "sen_id": 0},
                         {"video_id": "video0", "caption": "a dog", "sen_id": 1},
                         {"video_id": "video1", "caption": "a car", "sen_id": 2}]}
    (tmp_path / "ann.json").write_text(json.dumps(ann))
    recs = msrvtt_records(str(tmp_path / "ann.json"), str(vids))
    assert [r.captions for r in recs] == [("a cat", "a dog"), ("a car",)]
    assert len(msrvtt_records(str(tmp_path / "ann.json"), str(vids), split="train")) == 1
    ds = VideoTextDataset(recs * 8, num_frames=8, size=16)
    assert {ds[i]["caption"] for i in range(0, 16, 2)} == {"a cat", "a dog"}


def test_latent_cache_roundtrip(tmp_path, gif_data):
    from tfaa.testing import tiny_vae

    vae = tiny_vae()
    recs = read_caption_file(gif_data)
    ds = VideoTextDataset(recs + [type(recs[0])(str(tmp_path / "gone.mp4"), ("gone",))], num_frames=2, size=16)
    meta = cache_latents(ds, vae, str(tmp_path / "cache"), progress=False)
    assert meta["count"] == 4 and list(meta["skipped"]) == [str(tmp_path / "gone.mp4")]
    lds = LatentDataset(str(tmp_path / "cache"), num_frames=2, size=16)
    assert len(lds) == 4
    s = lds[2]
    expect = encode_pixels(vae, ds[2]["pixel_values"][None])[0]
    assert s["latents"].shape == (2, 4, 2, 2) and torch.equal(s["latents"], expect)
    assert s["caption"] == recs[2].captions[0]
    with pytest.raises(ValueError, match="size=16"):
        LatentDataset(str(tmp_path / "cache"), size=32)
