#!/usr/bin/env bash
# Runs the whole test suite in a virtual environment it installs first, in
# NEURONSCOPE_TEST_PROCESSES pytest processes (default 2; 1 runs in this process).
# Usage: scripts/test.sh [pytest args...]   (NEURONSCOPE_VENV picks the venv, default .venv)
set -euo pipefail
cd "$(dirname "$0")/.."
venv="${NEURONSCOPE_VENV:-.venv}"
bash scripts/install.sh "$venv"
if ! command -v redis-server >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  apt-get update -qq && apt-get install -y -qq redis-server >/dev/null
fi
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser tests will be skipped"
fi
processes="${NEURONSCOPE_TEST_PROCESSES:-2}"
parallel=()
if [ "$processes" != 1 ]; then
  # loadfile: a test file's tests share its module fixtures (trained networks, workers) in one process.
  parallel=(-n "$processes" --dist loadfile)
fi
exec "$venv/bin/python" -m pytest "${parallel[@]}" "$@"
