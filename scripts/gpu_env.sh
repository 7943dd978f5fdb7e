# Sourced by the scripts/gpu_*.sh scripts on a lent GPU machine: installs the carried wheels
# (.whl/, e.g. diffusers, which the machine lacks) into /tmp/site and puts it and the repository on
# PYTHONPATH.
if ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    && export PYTHONPATH=/tmp/site:${PYTHONPATH:-}
fi
export PYTHONPATH=$PWD:${PYTHONPATH:-}
