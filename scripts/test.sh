#!/usr/bin/env bash
# Installs everything the project needs into .venv, then runs every gate:
# ruff (lint + format), mypy --strict, the import layers, the whole pytest suite, and the
# built binary's proof (scripts/binary_proof.sh: Nuitka build, tests/binary, bench/startup).
# STUDIO_WORKER_SKIP_BINARY=1 leaves the binary out (a quick local run).
set -euo pipefail
cd "$(dirname "$0")/.."

# System packages (Debian/Ubuntu): patchelf and ccache for the Nuitka build, chromium for
# the dashboard's browser tests, xvfb and desktop-file-utils for the tray's. Tests whose
# tool is missing skip with the reason; elsewhere install the equivalents by hand.
missing=()
for pair in patchelf:patchelf ccache:ccache chromium:chromium Xvfb:xvfb \
  desktop-file-validate:desktop-file-utils; do
  command -v "${pair%%:*}" >/dev/null 2>&1 || missing+=("${pair#*:}")
done
if [ "${#missing[@]}" -gt 0 ]; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo -n"
  if command -v apt-get >/dev/null 2>&1 && { [ -z "$sudo" ] || command -v sudo >/dev/null; }; then
    echo "== apt-get install ${missing[*]}"
    $sudo apt-get update -qq && DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
      --no-install-recommends "${missing[@]}" >/dev/null
  else
    echo "note: not installed: ${missing[*]} (the tests that need them skip; the binary" \
      "build needs patchelf)" >&2
  fi
fi

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
.venv/bin/python -m pip install --quiet -e '.[dev,all,update,desktop]'

echo "== ruff"
.venv/bin/ruff check src tests bench build
.venv/bin/ruff format --check src tests bench build
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
if [ "$status" -ne 0 ] || [ -n "${STUDIO_WORKER_SKIP_BINARY:-}" ]; then
  exit "$status"
fi
exec bash scripts/binary_proof.sh
