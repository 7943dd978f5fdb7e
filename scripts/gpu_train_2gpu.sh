#!/usr/bin/env bash
# Issue 10 on an nvidia-h200-x2 machine: `tfaa train` on the SD1.4-size video UNet with random weights
# (synthetic data, 8 frames, 256 px, batch 4 per GPU, bf16, backend auto) on 1 GPU and under
# `accelerate launch --multi_gpu --num_processes 2`, after a short warm-up run that fills the Triton
# cache (without it the first run pays the kernel compilation and the comparison is meaningless).
#   bash scripts/gpu_train_2gpu.sh            # env: STEPS (default 30), SRC (sd14-random), SIZE, MP
# Prints frames/s (from each run's results.json: all steps, so use enough of them), the losses, and
# the ranks' parameter checksums. Logs in $OUT. NVLink multicast stays off (device README).
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}; mkdir -p "$OUT"
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,memory.total --format=csv
SRC=${SRC:-sd14-random}; STEPS=${STEPS:-30}; SIZE=${SIZE:-256}; MP=${MP:-bf16}
config() {  # config <output dir> <steps>  -> <output dir>.yaml
  python3 - "$1" "$2" <<PY
import sys, yaml
yaml.safe_dump({"output_dir": sys.argv[1], "seed": 0, "model": {"source": "$SRC", "backend": "auto"},
  "data": {"format": "synthetic", "synthetic_num_videos": 8, "num_frames": 8, "size": $SIZE},
  "train": {"batch_size": 4, "max_steps": int(sys.argv[2]), "checkpoint_every": 100000, "progress": False,
            "tensorboard": False, "mixed_precision": "$MP"}}, open(sys.argv[1] + ".yaml", "w"))
PY
}
report() {
  python3 -c "import json,sys; r=json.load(open(sys.argv[1] + '/results.json')); print(sys.argv[2], 'world', r['world_size'], 'frames/s %.1f' % r['frames_per_second'], 'loss %.4f -> %.4f' % (r['losses'][0], r['losses'][-1]), 'checksums', r['rank_checksums'])" "$1" "$2"
}
config /tmp/tfaa_warm 2; config /tmp/tfaa_1gpu "$STEPS"; config /tmp/tfaa_2gpu "$STEPS"
python3 -m tfaa train --config /tmp/tfaa_warm.yaml > "$OUT/warmup.log" 2>&1 || { tail -n 20 "$OUT/warmup.log"; exit 1; }
python3 -m tfaa train --config /tmp/tfaa_1gpu.yaml > "$OUT/train_1gpu.log" 2>&1 && report /tmp/tfaa_1gpu "1 GPU "
python3 -m accelerate.commands.launch --multi_gpu --num_processes 2 --num_machines 1 --mixed_precision "$MP" \
  --dynamo_backend no -m tfaa train --config /tmp/tfaa_2gpu.yaml > "$OUT/train_2gpu.log" 2>&1 && report /tmp/tfaa_2gpu "2 GPUs"
