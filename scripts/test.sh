#!/usr/bin/env bash
# Installs everything the project needs into .venv, then runs every gate:
# ruff (lint + format), mypy --strict, the import layers, and the whole pytest suite.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
# pip keeps downloaded and built wheels in its cache: a warm machine reinstalls in seconds.
# llama-cpp-python and stable-diffusion-cpp-python have no wheel for every platform: they
# then build from source (about 6 and 3 minutes on 2 cores, once; the built wheels are
# cached). Portable flags, no llava, no sd examples.
export CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF -DGGML_NATIVE=OFF -DSD_BUILD_EXAMPLES=OFF}"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e '.[dev,all,update]'

echo "== ruff"
.venv/bin/ruff check src tests bench
.venv/bin/ruff format --check src tests bench
echo "== mypy --strict"
.venv/bin/mypy
echo "== import layers"
.venv/bin/lint-imports
echo "== pytest"
# OpenMP threads of one engine library must not spin while another engine's tests run in
# the same process (in the daemon each engine has a process of its own).
export KMP_BLOCKTIME=0 OMP_WAIT_POLICY=passive
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
if [ "$status" -eq 5 ]; then
  echo "pytest collected no tests: that is a failure here" >&2
  exit 1
fi
exit "$status"
