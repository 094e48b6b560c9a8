#!/usr/bin/env bash
# Run ON THE GPU MACHINE from the repo root, one stage per call (each well under
# 10 minutes; every stage is self-contained, so a machine that went cold between
# calls only costs the ~1 min of writing the random-weight folder again):
#
#   bash scripts/gpu/run_stage.sh 1          # eager: A, batch sweep, dtype, eager switch rows
#   BATCH=16 bash scripts/gpu/run_stage.sh 2 # compiled default: A, B at BATCH, compile time cold/warm
#   BATCH=16 bash scripts/gpu/run_stage.sh 3 # output-changing rows (+ A, + B default)
#   BATCH=16 bash scripts/gpu/run_stage.sh 4 # compile variants: modes, VAE compile, inductor flags
#
# BATCH: B's best batch size from stage 1 (default 16). Results: $OUT/stageN.json
# and $OUT/stageN.log ($OUT is the device tool's return folder; runs/bench here).
# Wheels for diffusers/pydantic come from .whl/ (see fetch_wheels.sh; carry ".whl").
set -uo pipefail
STAGE=${1:?usage: run_stage.sh 1|2|3|4}
BATCH=${BATCH:-16}
OUT=${OUT:-runs/bench}
WORK=${WORK:-/tmp/synthface-bench}
LIMIT=${LIMIT:-560}  # seconds; the JSON is rewritten after every row, so a cut run keeps its rows
mkdir -p "$OUT" "$WORK"

if [ -d .whl ] && ! python3 -c "import diffusers, pydantic" 2>/dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv > "$OUT/gpu.csv" 2>&1 || true

bench() {  # shared settings: full-size architecture, fp16, 512px, DPM-Solver++ 25 steps, guidance 3
  timeout "$LIMIT" python3 -m synthface bench generate --device cuda --images 32 --work-dir "$WORK" \
    --set "generation.perf.compile_cache_dir=$WORK/inductor" --json "$OUT/stage$STAGE.json" "$@" 2>&1 | tee "$OUT/stage$STAGE.log"
}

case "$STAGE" in
  1) bench --parts reference,sweep,dtype,switches --batch-sizes 4,8,16,32,64 \
       --set generation.perf.compile=false --switches fuse_qkv,channels_last,attention,vae_slicing,cudnn_tf32 ;;
  2) bench --parts reference,sweep,cache --batch-sizes "$BATCH" ;;
  3) bench --parts reference,sweep,output --batch-sizes "$BATCH" ;;
  4) bench --parts reference,switches --batch-sizes "$BATCH" --switches compile_mode,compile_vae,inductor_tuning,compile ;;
  *) echo "unknown stage $STAGE (1-4)" >&2; exit 2 ;;
esac
