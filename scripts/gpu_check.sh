#!/usr/bin/env bash
# One call on a GPU machine: install carried wheels, build the CUDA extension, run the GPU tests and
# the benchmarks, update benchmarks/RESULTS.md, print a short summary last.
#   bash scripts/gpu_check.sh [tests] [attention] [conv] [train] [sampling] [sweeps]   (default: all but sweeps)
# Logs go to $OUT (or ./out) as gpu_check.log; RESULTS.md is copied there too, and the freshly built
# extension to $OUT/so/: carry it to the next call (at tfaa_kernels/) with TFAA_REUSE_SO=1 to skip
# the ~80 s build when the CUDA sources did not change.
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-out}; mkdir -p "$OUT"
LOG="$OUT/gpu_check.log"
export PYTHONUNBUFFERED=1 PIP_DISABLE_PIP_VERSION_CHECK=1
parts=${*:-"tests attention conv train sampling"}
summary=()
step() {  # step NAME CMD...: run, log, remember pass/fail and seconds
  local name=$1; shift
  local t0=$SECONDS
  echo "=== $name: $*" | tee -a "$LOG"
  "$@" 2>&1 | tee -a "$LOG"
  local rc=${PIPESTATUS[0]}
  summary+=("$(printf '%-22s rc=%-3s %4ss' "$name" "$rc" $((SECONDS - t0)))")
}
source scripts/gpu_env.sh
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm --format=csv | tee -a "$LOG"
python3 -c "import torch, triton; print('torch', torch.__version__, 'triton', triton.__version__, 'cuda', torch.version.cuda)" | tee -a "$LOG"
if [ "${TFAA_REUSE_SO:-0}" = 1 ] && ls tfaa_kernels/_C*.so >/dev/null 2>&1; then
  echo "=== cuda-build: reusing $(ls tfaa_kernels/_C*.so) (TFAA_REUSE_SO=1: carried from an earlier call of this session)" | tee -a "$LOG"
elif [ -f scripts/gpu_cuda_build.sh ]; then
  step cuda-build bash scripts/gpu_cuda_build.sh
  mkdir -p "$OUT/so" && cp tfaa_kernels/_C*.so "$OUT/so/" 2>/dev/null
fi
for p in $parts; do
  case $p in
    tests)     step gpu-tests env TFAA_AUTOTUNE=0 python3 -m pytest -q -m gpu ${GPU_TESTS:-tests} -p no:cacheprovider --durations=12 ;;
    attention) step bench-attention python3 benchmarks/bench_attention.py --results benchmarks/RESULTS.md ${BENCH_ATTENTION_ARGS:-} ;;
    conv)      [ -f benchmarks/bench_conv.py ] && step bench-conv python3 benchmarks/bench_conv.py --results benchmarks/RESULTS.md ;;
    train)     [ -f benchmarks/bench_train.py ] && step bench-train python3 benchmarks/bench_train.py --results benchmarks/RESULTS.md ${BENCH_TRAIN_ARGS:-} ;;
    sweeps)    step sweep-temporal python3 benchmarks/sweep_temporal.py; step sweep-spatial python3 benchmarks/sweep_spatial.py ;;
    sampling)  [ -f benchmarks/bench_sampling.py ] && step bench-sampling python3 benchmarks/bench_sampling.py --results benchmarks/RESULTS.md ;;
    *) echo "unknown part $p" ;;
  esac
done
cp benchmarks/RESULTS.md benchmarks/*.png "$OUT/" 2>/dev/null
echo; echo "===== summary"; printf '%s\n' "${summary[@]}"
grep -E "passed|failed" "$LOG" | tail -3
