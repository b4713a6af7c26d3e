"""What the benches share: a real `studio-worker run` process approved by an in-process
self-hosted studio, and the memory of a process and its children (Linux /proc).

BENCH_WORKER_STDERR=1 shows the worker's log instead of discarding it.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

from studio_worker.studio.server import StudioServer

PACKAGE = [sys.executable, "-m", "studio_worker"]


async def start_worker(
    studio: StudioServer,
    work: Path,
    command: list[str] | None = None,
    extra_config: str = "",
    timeout_s: float = 60.0,
) -> subprocess.Popen[bytes]:
    """Starts `<command> --config <work>/worker/config.toml run` against `studio` and
    approves its registration request; `command` defaults to this Python package."""
    config = work / "worker" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'api_base_url = "{studio.url}"\nvram_threshold_gb = 8.0\n'
        f'models_root = "{work / "models"}"\n{extra_config}'
    )
    program = command or PACKAGE
    proc = subprocess.Popen(
        [*program, "--config", str(config), "run"],
        env={**os.environ, "STUDIO_WORKER_REGISTRATION_POLL_SECS": "0.2"},
        stdout=subprocess.DEVNULL,
        stderr=None if os.environ.get("BENCH_WORKER_STDERR") else subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout_s
    while not studio.pending_requests():
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            raise SystemExit(f"{program[0]}: the worker never registered")
        await asyncio.sleep(0.05)
    studio.approve(studio.pending_requests()[0].id)
    return proc


def rss_mb(pid: int) -> float:
    """VmRSS of one process, in MB (0 when it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return 0.0
    for line in status.splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    try:
        children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
    except OSError:
        return [pid]
    return [pid, *(p for child in children for p in tree(int(child)))]
