#!/usr/bin/env bash
# Runs the whole test suite. Starts the local services the tests use (docker engine, PostgreSQL)
# when they are installed and not yet running; tests needing a GPU skip cleanly without one.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/services.sh
start_services
python3 -m ruff check .
python3 -m pytest -q "$@"
