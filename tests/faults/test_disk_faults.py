"""A disk that fills up during a model download: a real (small) tmpfs under the cache."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from rig import GATED_TASK, fault_rig


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    mount = tmp_path / "models"
    mount.mkdir()
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mount)],
            check=True,
            capture_output=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        pytest.skip("mounting a small tmpfs needs root")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False, capture_output=True)


async def test_disk_full_mid_download_fails_retryable_and_resumes_once_space_returns(
    tmp_path: Path, small_disk: Path
) -> None:
    async with fault_rig(tmp_path, models_root=small_disk, max_attempts=10_000) as rig:
        blob = os.urandom(3 * 1024 * 1024)
        (rig.studio.shelf.root / "big.bin").write_bytes(blob)
        model_file = {
            "role": "model",
            "url": f"{rig.proxy.url}/files/big.bin",
            "filename": "big.bin",
            "sha256": hashlib.sha256(blob).hexdigest(),
            # no approxBytes: the preflight cannot see the shortage coming
        }
        source = {"engine": "llama-cpp", "files": [model_file]}
        rig.engine.release.set()
        job_id = rig.studio.submit_job("llm", GATED_TASK, "gated", model_source=source)
        async with asyncio.timeout(20):
            while (job := rig.studio.get_job(job_id)) is None or job.attempts < 1:
                await asyncio.sleep(0.02)
        assert job.error is not None and job.error.startswith("disk full while writing big.bin")
        part = small_disk / "llama-cpp" / "gated" / "big.bin.part"
        assert 0 < part.stat().st_size < len(blob)  # kept for the resume

        grow = ["mount", "-o", "remount,size=8m", str(small_disk)]
        await asyncio.to_thread(subprocess.run, grow, check=True, timeout=10)
        job = await rig.outcome(job_id)
        assert job.status == "done", job.error
        # every attempt before the space came back failed retryable, once each; then once done
        assert rig.deliveries(job_id) == job.attempts + 1
        failed = [r for r in rig.daemon.status.snapshot().recent_jobs if r.outcome == "failed"]
        assert failed and all(r.error and r.error.startswith("disk full") for r in failed)
        assert (small_disk / "llama-cpp" / "gated" / "big.bin").read_bytes() == blob
        resumed = [r for r in rig.proxy.requests if b"range: bytes=" in r.lower()]
        assert resumed and b"bytes=0-" not in resumed[-1].lower()
        assert rig.daemon.status.snapshot().session_state.value == "connected"
