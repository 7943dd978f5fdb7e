#!/usr/bin/env bash
# Issue 10 on an nvidia-h200-x2 machine, in phases (env PHASES, default "throughput resume sample"):
#
#   throughput  `tfaa train` on the SD1.4-size video UNet with random weights (synthetic data, 8 frames,
#               256 px, batch 4 per GPU, bf16, backend auto) on 1 GPU and under `accelerate launch
#               --multi_gpu --num_processes 2`, after a short warm-up run that fills the Triton cache.
#               Prints steady-state frames/s (median step), the scaling, peak memory per GPU, losses.
#   resume      deterministic 2-GPU runs (train.deterministic): one uninterrupted, one killed with
#               SIGKILL after its first checkpoint and then `--resume`d on 2 GPUs; compares the losses.
#   sample      saves an SD1.4-size random-weight TFAAPipeline, then `accelerate launch --num_processes 2
#               -m tfaa sample --prompts-file` (5 prompts, temporal weights of the throughput run when
#               present): checks one output per prompt.
#   probe       NCCL all-reduce time of the temporal gradients' size, and 1- vs 2-GPU training with data
#               loader workers and with the bf16 gradient all-reduce (train.ddp_comm_hook).
#
#   PHASES="throughput" bash scripts/gpu_train_2gpu.sh   # env: STEPS (30), RSTEPS (20), SIZE (256), MP (bf16),
#                                                       # SRC (sd14-random; "tiny" for a CPU smoke run)
# KILL_AFTER_S (2): seconds between the killed run's first checkpoint and the SIGKILL. Logs in $OUT. NVLink multicast stays off (device README). The phases share /tmp between calls while
# the machine stays warm; each phase works on its own.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv,noheader
PHASES=${PHASES:-throughput resume sample}
SRC=${SRC:-sd14-random}; STEPS=${STEPS:-30}; RSTEPS=${RSTEPS:-20}; SIZE=${SIZE:-256}; MP=${MP:-bf16}
LAUNCH2=(python3 -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1
         --mixed_precision "$MP" --dynamo_backend no)

config() {  # config <output dir> <steps> <checkpoint_every> <deterministic: true|false> -> <dir>.yaml
  python3 - "$@" <<PY
import sys, yaml
out, steps, every, det = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4] == "true"
yaml.safe_dump({"output_dir": out, "seed": 0, "model": {"source": "$SRC", "backend": "auto"},
  "data": {"format": "synthetic", "synthetic_num_videos": 64, "num_frames": 8, "size": $SIZE},
  "train": {"batch_size": 4, "max_steps": steps, "checkpoint_every": every, "keep_last": 2, "progress": False,
            "tensorboard": False, "mixed_precision": "$MP", "deterministic": det}}, open(out + ".yaml", "w"))
PY
}
warm_up() {  # a 2-step 1-GPU run fills the Triton cache (compilation, autotuning), once per machine
  [[ -f /tmp/tfaa_warm/results.json ]] && return 0
  config /tmp/tfaa_warm 2 100000 false
  python3 -m tfaa train --config /tmp/tfaa_warm.yaml > "$OUT/warmup.log" 2>&1 || { tail -n 20 "$OUT/warmup.log"; exit 1; }
}
report() {  # report <output dir> <label>
  python3 - "$1" "$2" <<'PY'
import json, sys
r = json.load(open(sys.argv[1] + "/results.json"))
mem = ", ".join("%.1f" % (b / 2**30) for b in r["peak_memory_bytes"] if b is not None)
print("%s: world %d, %d steps, median step %.3f s, %.1f frames/s steady (%.1f overall), peak GiB/GPU [%s], "
      "loss %.4f -> %.4f, checksums %s" % (sys.argv[2], r["world_size"], len(r["losses"]),
      sorted(r["step_seconds"])[len(r["step_seconds"]) // 2], r["frames_per_second_median_step"],
      r["frames_per_second"], mem, r["losses"][0], r["losses"][-1], r["rank_checksums"]))
PY
}

if [[ " $PHASES " == *" throughput "* ]]; then
  config /tmp/tfaa_1gpu "$STEPS" 100000 false; config /tmp/tfaa_2gpu "$STEPS" 100000 false
  warm_up
  python3 -m tfaa train --config /tmp/tfaa_1gpu.yaml > "$OUT/train_1gpu.log" 2>&1 \
    && report /tmp/tfaa_1gpu "1 GPU " || tail -n 20 "$OUT/train_1gpu.log"
  "${LAUNCH2[@]}" -m tfaa train --config /tmp/tfaa_2gpu.yaml > "$OUT/train_2gpu.log" 2>&1 \
    && report /tmp/tfaa_2gpu "2 GPUs" || tail -n 20 "$OUT/train_2gpu.log"
  python3 - <<'PY'
import json
a, b = (json.load(open(f"/tmp/tfaa_{n}gpu/results.json")) for n in (1, 2))
print("scaling 2 GPUs / 1 GPU (steady frames/s): %.3fx" % (b["frames_per_second_median_step"]
                                                          / a["frames_per_second_median_step"]))
PY
fi

if [[ " $PHASES " == *" resume "* ]]; then
  every=$((RSTEPS / 2))
  config /tmp/tfaa_full "$RSTEPS" "$every" true; config /tmp/tfaa_killed "$RSTEPS" "$every" true
  rm -rf /tmp/tfaa_full /tmp/tfaa_killed
  "${LAUNCH2[@]}" -m tfaa train --config /tmp/tfaa_full.yaml > "$OUT/resume_full.log" 2>&1 \
    && report /tmp/tfaa_full "uninterrupted" || tail -n 20 "$OUT/resume_full.log"
  # the same run, killed once its first checkpoint is complete (checkpoints are renamed into place
  # when complete): SIGKILL to every process of the run, the launcher and the ranks (torchrun starts
  # the ranks in sessions of their own, so killing the launcher's process group would miss them);
  # then resumed on 2 GPUs
  "${LAUNCH2[@]}" -m tfaa train --config /tmp/tfaa_killed.yaml > "$OUT/resume_killed.log" 2>&1 &
  ckpt=$(printf "/tmp/tfaa_killed/checkpoints/step_%08d" "$every")
  for _ in $(seq 1200); do [[ -d $ckpt ]] && break; kill -0 $! 2>/dev/null || break; sleep 0.5; done
  sleep "${KILL_AFTER_S:-2}"; pkill -9 -f -- "--config /tmp/tfaa_killed.yaml"
  for _ in $(seq 100); do pgrep -f -- "--config /tmp/tfaa_killed.yaml" >/dev/null || break; sleep 0.2; done
  wait 2>/dev/null
  echo "killed run: checkpoints $(ls /tmp/tfaa_killed/checkpoints 2>/dev/null | tr '\n' ' ')," \
       "results.json $([[ -f /tmp/tfaa_killed/results.json ]] && echo present || echo absent)"
  "${LAUNCH2[@]}" -m tfaa train --config /tmp/tfaa_killed.yaml --resume > "$OUT/resume_resumed.log" 2>&1 \
    && report /tmp/tfaa_killed "resumed" || tail -n 20 "$OUT/resume_resumed.log"
  python3 - <<'PY'
import json
full, res = (json.load(open(f"/tmp/tfaa_{n}/results.json")) for n in ("full", "killed"))
if not res["losses"]:
    raise SystemExit("the killed run had finished before the kill: nothing to compare (use more RSTEPS)")
tail = full["losses"][-len(res["losses"]):]
diff = max(abs(a - b) for a, b in zip(tail, res["losses"]))
print("resumed from %s: %d losses, bitwise equal to the uninterrupted run's: %s (max |diff| %.3g); "
      "final checksums equal: %s" % (res["resumed_from"], len(res["losses"]), tail == res["losses"], diff,
                                     full["rank_checksums"] == res["rank_checksums"]))
PY
fi

if [[ " $PHASES " == *" probe "* ]]; then  # where the 2-GPU step's extra time goes
  cat > /tmp/allreduce.py <<'PY'
import os, torch, torch.distributed as dist
dist.init_process_group("nccl"); rank = dist.get_rank(); torch.cuda.set_device(rank)
n = 316_490_560  # the temporal parameters of the SD1.4-size video UNet
for dtype in (torch.float32, torch.bfloat16):
    x = torch.ones(n, dtype=dtype, device="cuda")
    for _ in range(3): dist.all_reduce(x)
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize(); start.record()
    for _ in range(10): dist.all_reduce(x)
    end.record(); torch.cuda.synchronize(); ms = start.elapsed_time(end) / 10
    if rank == 0:
        print("all-reduce of %d %s (%.2f GB): %.2f ms, %.0f GB/s algbw" % (n, dtype, x.nbytes / 1e9, ms, x.nbytes / ms / 1e6))
dist.destroy_process_group()
PY
  [[ ${ALLREDUCE:-1} == 1 ]] && python3 -m torch.distributed.run --nproc_per_node 2 /tmp/allreduce.py 2>&1 | grep all-reduce
  config /tmp/tfaa_probe "$STEPS" 100000 false
  warm_up
  # PROBES: one run per line, "<label> <processes: 1|2> [VAR=value ...] [train CLI args ...]"
  PROBES=${PROBES:-"1gpu_w2 1 --set data.num_workers=2
2gpu_w2 2 --set data.num_workers=2
2gpu_w2_bf16 2 --set data.num_workers=2 --set train.ddp_comm_hook=bf16
1gpu_w0 1
2gpu_w0 2"}
  while read -r label procs rest; do
    [[ -z $label ]] && continue
    read -ra words <<< "$rest"; envs=(); args=()
    for w in "${words[@]}"; do [[ ${#args[@]} == 0 && $w == [A-Z]*=* ]] && envs+=("$w") || args+=("$w"); done
    cmd=(python3 -m tfaa train); [[ $procs == 2 ]] && cmd=("${LAUNCH2[@]}" -m tfaa train)
    env "${envs[@]}" "${cmd[@]}" --config /tmp/tfaa_probe.yaml --output-dir "/tmp/tfaa_probe_$label" "${args[@]}" \
      > "$OUT/probe_$label.log" 2>&1 < /dev/null \
      && report "/tmp/tfaa_probe_$label" "$label ${envs[*]}" || tail -n 5 "$OUT/probe_$label.log"
  done <<< "$PROBES"
fi

if [[ " $PHASES " == *" sample "* ]]; then
  python3 - > "$OUT/sample_save.log" 2>&1 <<PY || tail -n 20 "$OUT/sample_save.log"
import torch
from tfaa.pipeline import TFAAPipeline
from tfaa.train import ModelConfig, build_components
c = build_components(ModelConfig(source="$SRC"))
pipe = TFAAPipeline(vae=c["vae"], text_encoder=c["text_encoder"], tokenizer=c["tokenizer"], unet=c["unet"],
                    scheduler=c["noise_scheduler"]).to(dtype=torch.float16)
pipe.save_pretrained("/tmp/sd14_random_pipe")
print("saved")
PY
  printf '%s\n' "a red circle moving left" "a blue square moving up" "a green triangle moving right" \
    "a yellow circle moving down" "a white square moving left" > /tmp/prompts.txt
  weights=(); [[ -d /tmp/tfaa_2gpu/final/temporal ]] && weights=(--temporal-weights /tmp/tfaa_2gpu/final/temporal)
  rm -rf /tmp/samples
  "${LAUNCH2[@]}" -m tfaa sample --model /tmp/sd14_random_pipe "${weights[@]}" --prompts-file /tmp/prompts.txt \
    --out /tmp/samples --frames 8 --steps 10 --height "$SIZE" --width "$SIZE" --dtype bf16 > "$OUT/sample.log" 2>&1 \
    || tail -n 20 "$OUT/sample.log"
  n=$(ls /tmp/samples 2>/dev/null | wc -l)
  echo "2-process sampling: $(grep -vc '^\s*$' /tmp/prompts.txt) prompts -> $n files: $(ls /tmp/samples | tr '\n' ' ')"
  cp "$(ls -d /tmp/samples/* | head -n 1)" "$OUT/" 2>/dev/null
fi
