#!/usr/bin/env bash
# Verdicts on the production basket, on the device machine (H200): the models generated on the GPU
# (checked against the committed pins), policy v2's gates calibrated by `evalbot calibrate`, then
# `evalbot eval` on the example repo's branches with that policy. Results land in $OUT
# (docs/results/production-verdicts/ keeps them).
#
#   bash benchmarks/production_verdicts.sh STEP [STEP...]      (carry .whl; see production_device.sh)
#
# Steps: wheels, generate (skipped when the files verify), calibrate (writes $RES/v2.toml; PV_LONG=16384
# adds the long-context probe, ~2 minutes a model),
# verdicts (PV_BRANCHES, default wrong,faster,main; PV_PASSES, default 1; PV_TAG names the output),
# experiments (the known-effect experiment on the production models, benchmarks/verdict_experiments.py;
# PV_AA_RUNS, default 0: the A/A verdicts above already cover A/A).
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
SITE=${PV_SITE:-/tmp/site}
MODELS=${PROD_MODELS:-/tmp/prod}
WORK=${PV_WORK:-/tmp/pvwork}
RES=${PV_RES:-$WORK/results}  # PV_RES=$OUT: a cut-off call still brings back what it wrote
KEYS=(qwen3moe-30b-a3b gemma4-26b-a4b)
mkdir -p "$RES" "$MODELS" "$WORK/data/models"
export PYTHONUNBUFFERED=1 PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
# What eval_example_repo.py gives `evalbot eval`: calibration shares its data and reference cache.
export EVALBOT_BUILD__BACKEND=local EVALBOT_BASKET__SET=production \
  EVALBOT_PATHS__DATA_DIR="$WORK/data" EVALBOT_PATHS__CACHE_DIR="$WORK/cache"
log() { printf '[production_verdicts %(%H:%M:%S)T] %s\n' -1 "$*"; }
export_results() { [ -n "${OUT:-}" ] && mkdir -p "$OUT" && cp -r "$RES"/. "$OUT"/ 2>/dev/null; return 0; }
trap export_results EXIT
# The correctness-only member ([basket] correctness): the real Gemma 3 270M, from $PV_GEMMA3 (the box
# lacks its package: llama_cuda_bench.sh's `stash assemble` joins it from carried pieces), else none.
G3=${PV_GEMMA3:-/tmp/gemma3.gguf}
if [ -f "$G3" ]; then
  ln -sf "$G3" "$WORK/gemma3-270m.gguf"
  export EVALBOT_BASKET__CORRECTNESS="$WORK/gemma3-270m.gguf"
else
  export EVALBOT_BASKET__CORRECTNESS=""
fi

step_wheels() {
  [ -f "$SITE/.done" ] && return 0
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" .whl/*.whl
  touch "$SITE/.done"
}
step_generate() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$RES/gpu.txt"
  if python3 benchmarks/production_basket.py verify --dir "$MODELS" --out "$RES/verify.json" >"$RES/verify.log" 2>&1; then
    log "models present and verified"
  else
    python3 benchmarks/production_basket.py generate --dir "$MODELS" --out "$RES/generate.json" --device gpu \
      --check 2>&1 | tee "$RES/generate.log"
  fi
  local key
  for key in "${KEYS[@]}"; do ln -sf "$MODELS/$key.Q4_K_M.gguf" "$WORK/data/models/$key.Q4_K_M.gguf"; done
}
step_calibrate() {
  log "evalbot calibrate --runs 2 on the production basket"
  local t0=$SECONDS
  python3 -m evalbot calibrate --runs 2 --json "$RES/calibrate.json" --policy-out "$RES/v2.toml" \
    --long-context "${PV_LONG:-0}" 2>&1 \
    | tee "$RES/calibrate.log"
  log "calibrate took $((SECONDS - t0)) s"
}
step_verdicts() {
  local policy=()
  [ -f "$RES/v2.toml" ] && policy=(--policy "$RES/v2.toml")
  log "evalbot eval on ${PV_BRANCHES:-wrong,faster,main} (${policy[*]:-shipped policy})"
  python3 benchmarks/eval_example_repo.py --basket "$MODELS" --set production "${policy[@]}" --workdir "$WORK" \
    --out "$RES/example-${PV_TAG:-1}.json" --branches "${PV_BRANCHES:-wrong,faster,main}" --passes "${PV_PASSES:-1}" 2>&1 \
    | tee -a "$RES/verdicts.log"
  nvidia-smi --query-gpu=memory.used,memory.total --format=csv | tee -a "$RES/verdicts.log"
}
step_experiments() {
  log "known effects on the production basket"
  python3 benchmarks/verdict_experiments.py --basket "$MODELS" --set production --out "$RES/vexp-production.json" \
    --aa-runs "${PV_AA_RUNS:-0}" --aa-budget 1 --effect-budget 3 --mde-budget 5 2>&1 | tee "$RES/vexp-production.log"
}

for s in "$@"; do
  case "$s" in
    wheels) step_wheels ;;
    generate) step_generate ;;
    calibrate) step_calibrate ;;
    verdicts) step_verdicts ;;
    experiments) step_experiments ;;
    *) echo "unknown step '$s' (wheels generate calibrate verdicts experiments)" >&2; exit 2 ;;
  esac
done
