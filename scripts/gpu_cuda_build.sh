#!/usr/bin/env bash
# Build the tfaa CUDA extension (tfaa_kernels._C) in place on the GPU machine and print each
# kernel's resource usage (ptxas -v: registers, spills, shared memory).
#
#   bash scripts/gpu_cuda_build.sh            # from the repository root
#   TFAA_CUDA_ARCHS="90a" bash scripts/gpu_cuda_build.sh   # faster: one target only
#
# Leaves tfaa_kernels/_C*.so next to the sources, which `import tfaa_kernels` then finds (the
# "cuda" backend loads it instead of JIT-building). Log: ${TFAA_BUILD_LOG:-build/tfaa_cuda_build.log}.
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
export MAX_JOBS=${MAX_JOBS:-$(nproc)}
export TFAA_FORCE_CUDA_BUILD=1
export TFAA_PTXAS_VERBOSE=1
LOG=${TFAA_BUILD_LOG:-build/tfaa_cuda_build.log}
mkdir -p "$(dirname "$LOG")"

echo "== tfaa CUDA build: $($PY -c 'import torch; print("torch", torch.__version__, "cuda", torch.version.cuda)'), $(nvcc --version | tail -1), MAX_JOBS=$MAX_JOBS, archs=${TFAA_CUDA_ARCHS:-80;90;90a}"
start=$(date +%s)
if ! $PY setup.py build_ext --inplace >"$LOG" 2>&1; then
    echo "== BUILD FAILED ($(( $(date +%s) - start )) s); last lines of $LOG:"
    grep -E "error|Error" "$LOG" | head -40 || true
    tail -40 "$LOG"
    exit 1
fi
echo "== built in $(( $(date +%s) - start )) s: $(ls tfaa_kernels/_C*.so)"

echo "== ptxas resource usage (sm_90a; function names demangled):"
# ptxas prints 'Compiling entry function X for sm_NN' then 'Used N registers ...' and spill lines.
awk '/Compiling entry function/ {fn=$0; sub(/.*entry function ./, "", fn); sub(/. for .*/, "", fn); arch=$NF}
     /Used [0-9]+ registers/ && arch ~ /sm_90a/ {print fn "\t" $0}
     /spill/ && arch ~ /sm_90a/ && !/ 0 bytes spill stores, 0 bytes spill loads/ {print "SPILL " fn "\t" $0}' "$LOG" \
  | (command -v c++filt >/dev/null && c++filt || cat) | sed 's/ptxas info *: //' | sort -u

echo "== load check:"
$PY - <<'PY'
import torch, tfaa_kernels, tfaa_kernels.cuda as tc
from tfaa_kernels.backends import available_backends
m = tc.build()
print("loaded", m.__name__, "from", m.__file__, "| torch cuBLAS handle:", m.uses_torch_cublas_handle)
print("available_backends('cuda') =", available_backends("cuda"))
assert "cuda" in available_backends("cuda")
q = torch.randn(2 * 4, 64, 8, 40, device="cuda", dtype=torch.bfloat16)
out = tfaa_kernels.first_adjacent_attention(q, q, q, 4, backend="cuda")
ref = tfaa_kernels.reference.first_adjacent_attention(q.double(), q.double(), q.double(), 4)
print("attention smoke rel err", ((out.double() - ref).norm() / ref.norm()).item())
x = torch.randn(8, 32, 8, 8, device="cuda", dtype=torch.bfloat16)
w = torch.randn(48, 32, 3, device="cuda", dtype=torch.bfloat16)
y = tfaa_kernels.temporal_conv1d(x, w, None, 4, backend="cuda")
ref = tfaa_kernels.reference.temporal_conv1d(x.double(), w.double(), None, 4)
print("conv smoke rel err", ((y.double() - ref).norm() / ref.norm()).item())
PY
