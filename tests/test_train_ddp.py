"""Multi-process (DDP) training on the CPU: ``accelerate launch --multi_gpu --num_processes 2`` runs
torchrun; without CUDA the trainer asks accelerate for its CPU mode, which sets up DDP over gloo.
This exercises the multi-GPU code path (gradient all-reduce, rank-sharded data, per-rank RNG
checkpoints, barriers) everywhere."""
import json
import os
import socket
import subprocess
import sys

import pytest
import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _launch(config: str, *extra: str) -> dict:
    cmd = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
           "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
           "--main_process_port", str(_free_port()), "-m", "tfaa", "train", "--config", config, *extra]
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("CUDA_VISIBLE_DEVICES", None)
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


@pytest.mark.slow
def test_two_process_training_agrees_and_resumes(tmp_path):
    out = tmp_path / "run"
    cfg = {"output_dir": str(out), "seed": 5, "model": {"source": "tiny"},
           "data": {"format": "synthetic", "synthetic_num_videos": 6, "num_frames": 2, "size": 16},
           "train": {"batch_size": 1, "max_steps": 2, "checkpoint_every": 1, "progress": False,
                     "tensorboard": False, "ema_decay": 0.9}}
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    _launch(str(path))
    res = json.loads((out / "results.json").read_text())
    assert res["world_size"] == 2 and res["final_step"] == 2
    assert len(res["rank_checksums"]) == 2 and res["rank_checksums"][0] == res["rank_checksums"][1]
    assert res["peak_memory_bytes"] == [None, None] and len(res["step_seconds"]) == 2
    ckpt = out / "checkpoints" / "step_00000002"
    assert {"rng_state_rank0.pt", "rng_state_rank1.pt", "training_state.pt", "meta.json"} <= set(os.listdir(ckpt))
    assert json.loads((ckpt / "meta.json").read_text())["world_size"] == 2

    _launch(str(path), "--resume", "--max-steps", "3")
    res2 = json.loads((out / "results.json").read_text())
    assert res2["final_step"] == 3 and res2["resumed_from"].endswith("step_00000002")
    assert res2["rank_checksums"][0] == res2["rank_checksums"][1] != res["rank_checksums"][0]


@pytest.mark.slow
def test_compressed_gradient_all_reduce_keeps_ranks_in_sync(tmp_path, hook="fp16"):
    """``train.ddp_comm_hook`` (fp16 here: torch's bf16 hook needs NCCL): the all-reduce runs on
    half-precision buckets; every rank applies the same (rounded) average gradient, so the ranks'
    weights stay identical, and the first loss is unchanged (gradients only affect later steps)."""
    runs = {}
    for name in ("no", hook):
        out = tmp_path / name
        cfg = {"output_dir": str(out), "seed": 5, "model": {"source": "tiny"},
               "data": {"format": "synthetic", "synthetic_num_videos": 4, "num_frames": 2, "size": 16},
               "train": {"batch_size": 1, "max_steps": 3, "checkpoint_every": 10, "progress": False,
                         "tensorboard": False, "ddp_comm_hook": name, "ddp_bucket_cap_mb": 1}}
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump(cfg))
        _launch(str(path))
        runs[name] = json.loads((out / "results.json").read_text())
    res = runs[hook]
    assert res["rank_checksums"][0] == res["rank_checksums"][1]
    assert res["rank_checksums"][0] != runs["no"]["rank_checksums"][0]  # the rounding is really applied
    assert res["losses"][0] == runs["no"]["losses"][0]
    assert res["losses"] == pytest.approx(runs["no"]["losses"], rel=1e-2)
