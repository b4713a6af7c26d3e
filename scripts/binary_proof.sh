#!/usr/bin/env bash
# Builds the standalone binary for this machine with every engine (`--engines all`, what a
# release ships; the engines are installed by the test command's `.[all]`) and proves it:
# tests/binary runs `--version`, the demo, a real session with a self-hosted studio, a
# real job on each engine (llama.cpp, faster-whisper, stable-diffusion.cpp with ffmpeg,
# piper), the self-update and installers/install.sh from a loopback fake release, all with
# the binary; then bench/startup.py prints its start time, size and idle memory beside
# the Python package's.
#
# Caches: Nuitka's own (NUITKA_CACHE_DIR, default ~/.cache/Nuitka) and ccache
# (~/.cache/ccache). The libraries go in as bytecode, so the build compiles only the
# worker's own package: ~7 min on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

.venv/bin/python -m pip install --quiet -e '.[build]'
echo "== build (Nuitka standalone, every engine)"
.venv/bin/python build/build.py --engines all
archive=$(.venv/bin/python build/build.py --engines all --archive-path)

echo "== the built binary: tests/binary"
STUDIO_WORKER_ARCHIVE="$archive" .venv/bin/python -m pytest -p no:cacheprovider tests/binary

echo "== bench/startup.py"
.venv/bin/python bench/startup.py --archive "$archive" --rounds 9
