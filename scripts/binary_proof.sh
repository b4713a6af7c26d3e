#!/usr/bin/env bash
# Builds the standalone binary for this machine (the core build: `--engines none`, the
# synthetic engine only; the release workflow builds every engine in) and proves it:
# tests/binary runs `--version`, the demo, a real session with a self-hosted studio and
# installers/install.sh from a loopback fake release, all with the binary; then
# bench/startup.py prints its start time, size and idle memory beside the Python package's.
#
# Caches: Nuitka's own (NUITKA_CACHE_DIR, default ~/.cache/Nuitka) and ccache
# (~/.cache/ccache): a warm machine rebuilds in minutes instead of ~20.
set -euo pipefail
cd "$(dirname "$0")/.."

.venv/bin/python -m pip install --quiet -e '.[build]'
echo "== build (Nuitka standalone, core)"
.venv/bin/python build/build.py --engines none
archive=$(.venv/bin/python build/build.py --engines none --archive-path)

echo "== the built binary: tests/binary"
STUDIO_WORKER_ARCHIVE="$archive" .venv/bin/python -m pytest -p no:cacheprovider tests/binary

echo "== bench/startup.py"
.venv/bin/python bench/startup.py --archive "$archive" --rounds 9
