"""tfaa.train on tiny random models (CPU, fp32): config checks, loss, frozen parameters, exact resume,
atomic checkpoints, keep-last-N, the CLI."""
import copy
import json
import os

import pytest
import torch
import yaml

from tfaa.cli import main as cli_main
from tfaa.train import (ConfigError, ResumableBatchSampler, build_components, config_from_dict, diffusion_loss,
                        find_latest_checkpoint, list_checkpoints, load_config, train)
from tfaa.train import checkpoint as ckpt_mod
from tfaa.train.loss import encode_text


def tiny_cfg(out, **train_kw):
    cfg = {"output_dir": str(out), "seed": 3,
           "model": {"source": "tiny"},
           "data": {"format": "synthetic", "synthetic_num_videos": 5, "num_frames": 2, "size": 16,
                    "caption_dropout": 0.3},
           "optim": {"learning_rate": 1e-3, "lr_scheduler": "cosine", "lr_warmup_steps": 2},
           "train": {"batch_size": 2, "max_steps": 4, "checkpoint_every": 2, "progress": False,
                     "tensorboard": False}}
    cfg["train"].update(train_kw)
    return cfg


# ---------------------------------------------------------------- config
@pytest.mark.parametrize("patch, match", [
    ({"train": {"max_step": 3}}, r"unknown config key 'train.max_step'; did you mean 'train.max_steps'"),
    ({"optimizer": {}}, r"unknown config key 'optimizer'; did you mean 'optim'"),
    ({"data": {"num_frame": 8}}, r"did you mean 'data.num_frames'"),
    ({"train": {"batch_size": "4"}}, r"train.batch_size must be an integer"),
    ({"train": {"batch_size": 0}}, r"train.batch_size must be >= 1, got 0"),
    ({"optim": {"learning_rate": 0.0}}, r"optim.learning_rate must be > 0.0"),
    ({"data": {"size": 20}}, r"data.size must be a multiple of 8"),
    ({"data": {"num_frames": 1}}, r"data.num_frames must be >= 2"),
    ({"data": {"caption_dropout": 1.5}}, r"data.caption_dropout must be >= 0.0 and <= 1.0"),
    ({"train": {"ema_decay": 1.0}}, r"train.ema_decay must be > 0.0 and < 1.0"),
    ({"train": {"mixed_precision": "bf61"}}, r"did you mean 'bf16'"),
    ({"model": {"source": "pretrained"}}, r"model.pretrained_model_path is required"),
    ({"data": {"format": "captions"}}, r"data.captions is required"),
    ({"data": {"format": "captions", "captions": "/no/such.csv"}}, r"data.captions '/no/such.csv' does not exist"),
    ({"train": {"resume": "/no/ckpt"}}, r"train.resume must be null, 'latest' or an existing"),
    ({"train": {"deterministic": "yes"}}, r"train.deterministic must be"),
])
def test_config_errors_name_the_key(tmp_path, patch, match):
    cfg = tiny_cfg(tmp_path)
    for section, values in patch.items():
        if isinstance(cfg.get(section), dict):
            cfg[section].update(values)
        else:
            cfg[section] = values
    with pytest.raises(ConfigError, match=match):
        config_from_dict(cfg)


def test_config_yaml_roundtrip_and_overrides(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_cfg(tmp_path)) + "")
    cfg = load_config(str(path), overrides={"train.max_steps": 7, "optim.learning_rate": "2e-4"})
    assert cfg.train.max_steps == 7 and cfg.optim.learning_rate == 2e-4
    assert cfg.data.num_frames == 2 and cfg.model.source == "tiny"
    d = config_from_dict({"data": {"format": "synthetic"}, "model": {"source": "tiny"}})
    assert (d.data.num_frames, d.data.target_fps, d.data.size) == (8, 24.0, 256)  # the thesis' defaults


def test_empty_dataset_fails_before_models(tmp_path, monkeypatch):
    (tmp_path / "empty.jsonl").write_text("")
    cfg = tiny_cfg(tmp_path)
    cfg["data"].update(format="captions", captions=str(tmp_path / "empty.jsonl"))
    import tfaa.train.trainer as trainer

    monkeypatch.setattr(trainer, "build_components", lambda *a: pytest.fail("models built for an empty dataset"))
    with pytest.raises(ValueError, match="empty"):
        train(cfg)


def test_cli_rejects_bad_config(tmp_path, capsys):
    cfg = tiny_cfg(tmp_path)
    cfg["train"]["learning_rat"] = 1
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(cfg))
    assert cli_main(["train", "--config", str(path)]) == 2
    err = capsys.readouterr().err
    assert "train.learning_rat" in err and "valid keys in train" in err


# ---------------------------------------------------------------- sampler
def test_sampler_shards_cover_and_resume():
    full = [b for b in ResumableBatchSampler(10, 2, seed=1, epoch=0, num_replicas=2, rank=0)]
    other = [b for b in ResumableBatchSampler(10, 2, seed=1, epoch=0, num_replicas=2, rank=1)]
    seen = sorted(i for b in full + other for i in b)
    assert seen == list(range(10)) + [seen[-1]] * 0 or set(seen) == set(range(10))
    assert len(full) == len(other) == 3
    tail = list(ResumableBatchSampler(10, 2, seed=1, epoch=0, start_batch=1, num_replicas=2, rank=0))
    assert tail == full[1:]
    assert list(ResumableBatchSampler(10, 2, seed=1, epoch=1)) != list(ResumableBatchSampler(10, 2, seed=1, epoch=0))


# ---------------------------------------------------------------- loss / frozen parameters
def test_loss_decreases_and_only_temporal_parameters_change():
    cfg = config_from_dict(tiny_cfg("/tmp/unused"), validate=False)
    torch.manual_seed(0)
    comps = build_components(cfg.model)
    unet = comps["unet"].train()
    spatial_before = copy.deepcopy(unet.unet.state_dict())
    temporal_before = copy.deepcopy(unet.temporal.state_dict())
    params = [p for p in unet.parameters() if p.requires_grad]
    assert {id(p) for p in params} == {id(p) for p in unet.temporal_parameters()}
    opt = torch.optim.AdamW(params, lr=2e-3)
    latents = torch.randn(2, 3, 4, 4, 4)
    text = encode_text(comps["tokenizer"], comps["text_encoder"], ["a red circle moving left", ""], "cpu")
    losses = []
    for _ in range(6):
        g = torch.Generator().manual_seed(0)  # same noise and timesteps: a fixed batch
        loss = diffusion_loss(unet, latents, text, comps["noise_scheduler"], g)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0] * 0.97, losses
    assert all(torch.equal(v, unet.unet.state_dict()[k]) for k, v in spatial_before.items())
    assert all(p.grad is None for p in unet.unet.parameters())
    changed = [k for k, v in unet.temporal.state_dict().items() if not torch.equal(v, temporal_before[k])]
    assert len(changed) > 0
    assert all(p.requires_grad is False for p in comps["vae"].parameters())
    assert all(p.requires_grad is False for p in comps["text_encoder"].parameters())


class _RecordTimesteps(torch.nn.Module):
    """A stand-in UNet that records the timesteps it is called with and predicts zeros."""

    def __init__(self):
        super().__init__()
        self.seen = []

    def forward(self, zt, t, text_emb, num_frames, return_dict=False):
        self.seen.append(t.clone())
        return (torch.zeros_like(zt),)


def test_diffusion_loss_timestep_range():
    from diffusers import DDPMScheduler

    sched = DDPMScheduler(num_train_timesteps=1000)
    unet = _RecordTimesteps()
    latents, text = torch.randn(64, 2, 4, 2, 2), torch.randn(64, 3, 8)
    diffusion_loss(unet, latents, text, sched, torch.Generator().manual_seed(0), timestep_range=(600, 1000))
    t = unet.seen[-1]
    assert t.min() >= 600 and t.max() <= 999 and t.unique().numel() > 10
    assert torch.equal(t.view(64, 2)[:, 0], t.view(64, 2)[:, 1])  # one timestep per video
    # no range: the whole schedule, the same draws as before the parameter existed
    diffusion_loss(unet, latents, text, sched, torch.Generator().manual_seed(0))
    g = torch.Generator().manual_seed(0)
    torch.randn(latents.flatten(0, 1).shape, generator=g)
    assert torch.equal(unet.seen[-1].view(64, 2)[:, 0], torch.randint(0, 1000, (64,), generator=g))
    for bad in ((600, 600), (-1, 10), (0, 1001)):
        with pytest.raises(ValueError, match="timestep_range"):
            diffusion_loss(unet, latents, text, sched, torch.Generator(), timestep_range=bad)


def test_ddpm_schedule_is_sd():
    from tfaa.train import sd_ddpm_scheduler

    s = sd_ddpm_scheduler()
    assert s.config.num_train_timesteps == 1000 and s.config.beta_schedule == "scaled_linear"
    assert s.betas[0].item() == pytest.approx(0.00085) and s.betas[-1].item() == pytest.approx(0.012)


# ---------------------------------------------------------------- training runs
def test_train_runs_writes_checkpoints_and_logs(tmp_path):
    cfg = tiny_cfg(tmp_path, max_steps=3, checkpoint_every=1, keep_last=2, tensorboard=True, ema_decay=0.9)
    res = train(cfg)
    assert res["final_step"] == 3 and len(res["losses"]) == 3
    assert all(torch.isfinite(torch.tensor(res["losses"])))
    assert len(res["step_seconds"]) == 3 and min(res["step_seconds"]) > 0
    assert res["frames_per_second_median_step"] > 0 and res["peak_memory_bytes"] == [None]  # CPU
    assert res["cuda_graph"] is False  # the default turns on only with CUDA
    assert res["trainable_parameters"] > 0 and res["total_parameters"] > res["trainable_parameters"]
    root = tmp_path / "checkpoints"
    assert [os.path.basename(p) for p in list_checkpoints(str(root))] == ["step_00000002", "step_00000003"]
    assert find_latest_checkpoint(str(root)).endswith("step_00000003")
    for sub in ("temporal", "ema_temporal"):
        assert os.path.isfile(tmp_path / "final" / sub / "diffusion_pytorch_model.safetensors")
    assert any(n.startswith("events.out.tfevents") for n in os.listdir(tmp_path / "logs"))
    assert json.loads((tmp_path / "results.json").read_text())["final_step"] == 3
    # the saved weights load into a fresh video UNet
    from tfaa.train import build_components as bc
    unet = bc(config_from_dict(cfg).model)["unet"]
    unet.load_temporal_weights(str(tmp_path / "final" / "temporal"))


def test_resume_is_bitwise_identical(tmp_path):
    kw = dict(max_steps=4, checkpoint_every=2, gradient_accumulation_steps=2, ema_decay=0.8)
    cfg_a = tiny_cfg(tmp_path / "a", **kw)
    cfg_a["data"]["random_start"] = True
    full = train(cfg_a)
    cfg_b = copy.deepcopy(cfg_a)
    cfg_b["output_dir"] = str(tmp_path / "b")
    first = train(cfg_b, stop_at_step=2)
    assert first["final_step"] == 2 and not os.path.exists(tmp_path / "b" / "final")
    cfg_b["train"]["resume"] = "latest"
    second = train(cfg_b)
    assert second["resumed_from"].endswith("step_00000002")
    assert full["losses"] == first["losses"] + second["losses"]
    assert full["param_checksum"] == second["param_checksum"]
    for sub in ("temporal", "ema_temporal"):
        f = f"final/{sub}/diffusion_pytorch_model.safetensors"
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


def test_deterministic_run_matches_and_restores_the_global_flag(tmp_path):
    plain = train(tiny_cfg(tmp_path / "a", max_steps=2, checkpoint_every=10))
    assert not torch.are_deterministic_algorithms_enabled()
    det = train(tiny_cfg(tmp_path / "b", max_steps=2, checkpoint_every=10, deterministic=True))
    assert not torch.are_deterministic_algorithms_enabled()  # the caller's setting comes back
    assert det["losses"] == plain["losses"]  # CPU fp32: the same algorithms either way


def test_crash_during_checkpoint_keeps_previous_latest(tmp_path, monkeypatch):
    cfg = tiny_cfg(tmp_path, max_steps=4, checkpoint_every=2)
    real = ckpt_mod._write_json

    def crash_on_step4(path, obj):
        if obj.get("step") == 4:
            raise KeyboardInterrupt("simulated crash while writing step 4")
        real(path, obj)

    monkeypatch.setattr(ckpt_mod, "_write_json", crash_on_step4)
    with pytest.raises(KeyboardInterrupt):
        train(cfg)
    root = tmp_path / "checkpoints"
    assert find_latest_checkpoint(str(root)).endswith("step_00000002")
    assert not (root / "step_00000004").exists() and (root / ".tmp_step_00000004").exists()
    assert (root / "latest").read_text() == "step_00000002"
    monkeypatch.setattr(ckpt_mod, "_write_json", real)
    cfg["train"]["resume"] = "latest"
    res = train(cfg)
    assert res["resumed_from"].endswith("step_00000002") and res["steps"] == [3, 4]
    assert not (root / ".tmp_step_00000004").exists()
    assert find_latest_checkpoint(str(root)).endswith("step_00000004")


def test_cli_train_and_resume(tmp_path, capsys):
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(tiny_cfg(tmp_path / "run", max_steps=2, checkpoint_every=1)))
    assert cli_main(["train", "--config", str(path)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["final_step"] == 2 and out["resumed_from"] is None
    assert cli_main(["train", "--config", str(path), "--resume", "--max-steps", "3"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["final_step"] == 3 and out["resumed_from"].endswith("step_00000002")


def test_latent_cache_training_matches_pixel_training(tmp_path):
    cfg = tiny_cfg(tmp_path / "px", max_steps=2)
    cfg["data"]["caption_dropout"] = 0.0
    px = train(cfg)
    cached = copy.deepcopy(cfg)
    cached["output_dir"] = str(tmp_path / "lat")
    cached["data"]["latent_cache_dir"] = str(tmp_path / "cache")
    # the synthetic data is generated per output_dir; same seed -> same videos
    lat = train(cached)
    assert os.path.isfile(tmp_path / "cache" / "meta.json")
    assert lat["losses"] == pytest.approx(px["losses"], rel=1e-5)


def test_gradient_checkpointing_gives_the_same_losses(tmp_path):
    plain = train(tiny_cfg(tmp_path / "plain", max_steps=2, checkpoint_every=5))
    cfg = tiny_cfg(tmp_path / "ckpt", max_steps=2, checkpoint_every=5)
    cfg["model"]["gradient_checkpointing"] = True
    ckpt = train(cfg)
    assert ckpt["losses"] == pytest.approx(plain["losses"], rel=1e-6, abs=0)


def test_unreadable_videos_are_counted_across_workers(tmp_path):
    from tfaa.data import make_synthetic_dataset

    cap = make_synthetic_dataset(str(tmp_path / "data"), num_videos=3, num_frames=4, size=16)
    (tmp_path / "data" / "broken.mp4").write_bytes(b"\x00" * 100)
    with open(cap, "a") as fh:
        fh.write(json.dumps({"path": "broken.mp4", "caption": "broken"}) + "\n")
    cfg = tiny_cfg(tmp_path / "run", max_steps=2, checkpoint_every=5)
    cfg["data"].update(format="captions", captions=cap, num_workers=1)
    res = train(cfg)
    assert res["final_step"] == 2
    assert res["skipped_videos"] == 1 and res["skipped_paths"] == [str(tmp_path / "data" / "broken.mp4")]


def test_shipped_configs_are_valid(tmp_path, capsys):
    import tfaa.train

    cdir = os.path.join(os.path.dirname(tfaa.train.__file__), "configs")
    for name in ("ucf101.yaml", "msrvtt.yaml"):  # data/model paths do not exist here: keys and types only
        with open(os.path.join(cdir, name)) as fh:
            cfg = config_from_dict(yaml.safe_load(fh), validate=False)
        assert cfg.data.num_frames == 8 and cfg.data.target_fps == 24.0 and cfg.data.size == 256
    tiny = os.path.join(cdir, "tiny_synthetic.yaml")
    assert cli_main(["train", "--config", tiny, "--output-dir", str(tmp_path), "--check"]) == 0
    assert "config OK" in capsys.readouterr().out
