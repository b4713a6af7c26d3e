"""The built binary's proof: fixtures for the archive `build/build.py` made.

These tests run only when `STUDIO_WORKER_ARCHIVE` names a built release archive
(`scripts/binary_proof.sh` builds one and sets it; `.ci/run` runs that script). Without it
they are skipped with that reason: a build takes minutes to tens of minutes.
"""

from __future__ import annotations

import os
import sys
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

TESTS = Path(__file__).resolve().parents[1]
for helper_dir in (TESTS / "e2e", TESTS / "installers", TESTS / "platform"):
    if str(helper_dir) not in sys.path:
        sys.path.insert(0, str(helper_dir))

ARCHIVE_ENV = "STUDIO_WORKER_ARCHIVE"


@pytest.fixture(scope="session")
def archive() -> Path:
    value = os.environ.get(ARCHIVE_ENV)
    if not value:
        pytest.skip(f"no built binary: set {ARCHIVE_ENV} (scripts/binary_proof.sh does)")
    path = Path(value).resolve()
    assert path.is_file(), f"{ARCHIVE_ENV}={value} is not a file"
    return path


@pytest.fixture(scope="session")
def unpacked(archive: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """The archive's single folder, unpacked as the installer would."""
    target = tmp_path_factory.mktemp("unpacked")
    with tarfile.open(archive) as tar:
        tar.extractall(target, filter="data")
    (folder,) = list(target.iterdir())
    yield folder


@pytest.fixture(scope="session")
def binary(unpacked: Path) -> Path:
    exe = unpacked / ("studio-worker.exe" if sys.platform == "win32" else "studio-worker")
    assert exe.is_file() and os.access(exe, os.X_OK)
    return exe
