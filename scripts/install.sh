#!/usr/bin/env bash
# Install tfaa and everything its tests and demo need, on a fresh machine.
# torch first (a pinned CPU build where no torch is present; an existing torch is kept), then the
# rest, then the package itself without build isolation (an isolated build would fetch a CUDA torch).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
if ! "$PY" -c "import torch" 2>/dev/null; then
  "$PY" -m pip install -q "torch==${TFAA_TORCH_VERSION:-2.13.0}"
fi
"$PY" -m pip install -q -r requirements.txt
"$PY" -m pip install -q --no-build-isolation --no-deps -e .
"$PY" -c "import torch, triton, tfaa_kernels; print('tfaa installed: torch', torch.__version__, '| triton', triton.__version__, '| backends here:', tfaa_kernels.available_backends())"
