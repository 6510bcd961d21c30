#!/usr/bin/env bash
# The production basket on the device machine (H200): generate both models on the GPU against the
# committed pins, verify them, our runtime's decode speed and memory at 128/4k/16k/32k, and llama.cpp's
# CUDA build on the same files. Results land in $OUT (docs/results/production/ keeps them).
#
#   bash benchmarks/production_device.sh STEP [STEP...]
#
# Carry .llsrc and .whl (benchmarks/llama_cuda_prepare.sh makes them). Calls in sequence, each within
# 30 s of the last (the models, the llama.cpp build and results live in the machine's /tmp):
#   1. bash benchmarks/production_device.sh setup tests generate verify   (starts the llama.cpp build)
#   2. bash benchmarks/production_device.sh ours
#   3. bash benchmarks/production_device.sh llama summary
#
# Steps: setup (wheels + background llama-bench build, via llama_cuda_bench.sh), tests (the GPU tests of
# the production generator), generate, verify, ours (benchmarks/runtime_bench.py), llama (llama-bench, fa 0
# and 1), summary.
set -euo pipefail
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
W=${LLB_WORK:-/tmp/llb}
SITE=${LLB_SITE:-/tmp/site}
MODELS=${PROD_MODELS:-/tmp/prod}
RES=$W/prod-results
DEPTHS=${PROD_DEPTHS:-128,4096,16384,32768}
KEYS=(qwen3moe-30b-a3b gemma4-26b-a4b)
mkdir -p "$RES" "$MODELS"
export PYTHONUNBUFFERED=1 PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}"
log() { printf '[production_device %(%H:%M:%S)T] %s\n' -1 "$*"; }
export_results() { [ -n "${OUT:-}" ] && mkdir -p "$OUT" && cp "$RES"/* "$OUT"/ 2>/dev/null; return 0; }
trap export_results EXIT

step_setup() { bash benchmarks/llama_cuda_bench.sh stash start status; }
step_tests() {
  python3 -m pytest -q -p no:cacheprovider tests/test_production_basket_gpu.py tests/test_runtime_worker.py 2>&1 \
    | tee "$RES/gpu_tests.log"
}
step_generate() {
  nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader | tee "$RES/gpu.txt"
  python3 benchmarks/production_basket.py generate --dir "$MODELS" --out "$RES/generate.json" --device gpu --check \
    2>&1 | tee "$RES/generate.log"
  df -h "$MODELS" | tail -1
}
step_verify() { python3 benchmarks/production_basket.py verify --dir "$MODELS" --out "$RES/verify.json" 2>&1 | tee "$RES/verify.log"; }
step_ours() {
  local files=() key
  for key in "${KEYS[@]}"; do files+=("$MODELS/$key.Q4_K_M.gguf"); done
  mkdir -p "$W/nobasket"
  python3 benchmarks/runtime_bench.py bench --basket "$W/nobasket" --contexts "$DEPTHS" --out "$RES/runtime.json" \
    --gguf "${files[@]}" 2>&1 | tee "$RES/runtime.log"
}
step_llama() {
  bash benchmarks/llama_cuda_bench.sh wait
  local ld=""; [ -f "$W/ldpath" ] && ld=$(cat "$W/ldpath")
  for key in "${KEYS[@]}"; do
    log "llama-bench $key: tg128 at depths $DEPTHS, fa 0,1, 3 repetitions"
    LD_LIBRARY_PATH=${ld:+$ld:}${LD_LIBRARY_PATH:-} "$W/build/bin/llama-bench" -m "$MODELS/$key.Q4_K_M.gguf" \
      -ngl 99 -p 0 -n 128 -d "$DEPTHS" -r 3 -fa 0,1 -o json > "$RES/llama_$key.json" 2> "$RES/llama_$key.log" \
      || { tail -30 "$RES/llama_$key.log"; log "llama-bench failed on $key"; }
  done
}
step_summary() {
  python3 - "$RES" "${KEYS[@]}" <<'EOF' | tee "$RES/summary.txt"
import json, pathlib, sys
res, keys = pathlib.Path(sys.argv[1]), sys.argv[2:]
ours = json.loads((res / "runtime.json").read_text()) if (res / "runtime.json").is_file() else {"models": {}}
print(f"{ours.get('gpu', '?')}: measured copy bandwidth {ours.get('peak_bytes_per_s', 0) / 1e9:.0f} GB/s")
for key in keys:
    llama = {}
    path = res / f"llama_{key}.json"
    if path.is_file() and path.stat().st_size:
        for r in json.loads(path.read_text()):
            if r.get("n_gen") and not r.get("n_prompt"):
                llama[(int(r["flash_attn"]), int(r["n_depth"]))] = (r["avg_ts"], r["stddev_ts"])
    speed = ours["models"].get(key, {}).get("speed", {})
    print(f"{key}: decode tokens/s (llama-bench tg128 mean +- sd of 3; ours 1e3 / median graph step of 200)")
    print(f"{'depth':>6} | {'llama fa0':>16} | {'llama fa1':>16} | {'ours':>8} | roofline | ours / best llama")
    for d in sorted({d for _, d in llama} | {int(c) for c in speed}):
        cells = [f"{llama[(fa, d)][0]:8.1f} +- {llama[(fa, d)][1]:5.1f}" if (fa, d) in llama else f"{'-':>16}"
                 for fa in (0, 1)]
        s = speed.get(str(d), {})
        o = s.get("tokens_per_s")
        best = max((llama[(fa, d)][0] for fa in (0, 1) if (fa, d) in llama), default=None)
        frac = f"{s['fraction_of_peak']:.2f}" if "fraction_of_peak" in s else "-"
        print(f"{d:>6} | {cells[0]} | {cells[1]} | {(f'{o:8.1f}' if o else '-'):>8} | {frac:>8} | "
              f"{f'{o / best:.2f}x' if o and best else '-'}")
EOF
}
[ $# -gt 0 ] || { sed -n '2,17p' "$0"; exit 2; }
for s in "$@"; do
  case "$s" in
    setup) step_setup ;; tests) step_tests ;; generate) step_generate ;; verify) step_verify ;;
    ours) step_ours ;; llama) step_llama ;; summary) step_summary ;;
    *) echo "unknown step '$s'" >&2; exit 2 ;;
  esac
done
