#!/usr/bin/env bash
# One-shot set-up of a fresh machine: system packages the tests use for real (docker engine,
# PostgreSQL, headless Chromium) and the Python package with its dev and llama.cpp extras.
set -euo pipefail
cd "$(dirname "$0")/.."

if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends \
        git docker.io postgresql chromium chromium-driver iproute2 util-linux >/dev/null
else
    echo "install.sh: not root or no apt-get; skipping system packages (docker, postgresql, chromium)" >&2
fi

python3 -m pip install -q --upgrade pip
# llama-cpp-python compiles llama.cpp from source (~6 min on 2 cores).
CMAKE_BUILD_PARALLEL_LEVEL="${CMAKE_BUILD_PARALLEL_LEVEL:-$(nproc)}" \
    python3 -m pip install -q -e ".[dev,llama]"
echo "install.sh: done"
