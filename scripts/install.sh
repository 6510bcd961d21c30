#!/usr/bin/env bash
# One-shot set-up of a fresh machine: system packages the tests use for real (docker engine,
# PostgreSQL, headless Chromium) and the Python package with its dev and llama.cpp extras.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    echo "install.sh: installing Debian packages (docker, postgresql, chromium; a minute or two) ..."
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        git docker.io postgresql chromium chromium-driver iproute2 util-linux >/dev/null
else
    echo "install.sh: not root or no apt-get; skipping system packages (docker, postgresql, chromium)" >&2
fi

echo "install.sh: upgrading pip"
python3 -m pip install -q --upgrade pip
# pip -q keeps the log readable, but then the llama.cpp compile below is minutes of silence: say so.
echo "install.sh: installing evalbot with its dev and llama extras; llama-cpp-python compiles llama.cpp" \
     "from source on $(nproc) cores (about 6 min on 2 cores) ..."
started=$SECONDS
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    python3 -m pip install -q -e ".[dev,llama]"
elapsed=$((SECONDS - started))
echo "install.sh: python packages installed in $((elapsed / 60)) min $((elapsed % 60)) s"
echo "install.sh: done"
