#!/usr/bin/env bash
# Issue 17 part 2: run ON THE GPU MACHINE from the repo root, as one device call
# with carry [".whl"] (the H200 image lacks diffusers and pydantic; fetch them
# here first with `bash scripts/gpu/fetch_wheels.sh`). Ray is not in the
# image and its wheel (79 MB) is over the 64 MiB a call may carry, so there the
# factory step runs the shard jobs through the worker's code in-process
# (--runner auto says which in the JSON). See docs/throughput.md.
#
#   bash scripts/gpu_factory.sh                                  # every step, defaults
#   bash scripts/gpu_factory.sh --perf compile=false             # eager, if compile does not fit the call
#   bash scripts/gpu_factory.sh --steps env                      # only the environment (seconds)
#
# Results: $OUT/factory-gpu.json (rewritten after every step), the logs beside it.
set -uo pipefail
OUT=${OUT:-runs/gpu-factory}
mkdir -p "$OUT"
if [ -d .whl ] && ! python3 -c "import diffusers, pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
timeout "${LIMIT:-580}" python3 scripts/gpu_factory.py --out "$OUT" "$@" 2>&1 | tee "$OUT/gpu-factory.log"
