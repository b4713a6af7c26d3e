"""Host facts for `WorkerCapabilities` (behaviour §7): names and total GPU memory."""

from __future__ import annotations

import getpass
import logging
import platform
import shutil
import socket
import subprocess
import sys

log = logging.getLogger(__name__)

GIB = 1024**3
MACOS_UNIFIED_FRACTION = 0.75


def machine_name() -> str:
    try:
        return socket.gethostname() or "unknown-host"
    except OSError:
        return "unknown-host"


def username() -> str:
    try:
        return getpass.getuser() or "unknown-user"
    except (OSError, KeyError, ImportError):
        return "unknown-user"


def parse_nvidia_smi_mib(output: str) -> float:
    """Largest `memory.total` (MiB, one line per GPU) as GiB; 0 when unreadable."""
    best = 0.0
    for line in output.splitlines():
        try:
            best = max(best, float(line.strip()) / 1024)
        except ValueError:
            continue
    return round(best, 2)


def _run(argv: list[str]) -> str | None:
    if shutil.which(argv[0]) is None:
        return None
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=5, check=False)
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def vram_total_gib() -> float:
    """NVIDIA via nvidia-smi; macOS unified memory x 0.75; else 0 (unknown)."""
    out = _run(["nvidia-smi", "--query-gpu=memory.total", "--format=csv,noheader,nounits"])
    if out:
        return parse_nvidia_smi_mib(out)
    if sys.platform == "darwin" and platform.machine() == "arm64":
        mem = _run(["sysctl", "-n", "hw.memsize"])
        if mem and mem.strip().isdigit():
            return round(int(mem) / GIB * MACOS_UNIFIED_FRACTION, 2)
    log.debug("no GPU memory detected", extra={"op": "probe_vram"})
    return 0.0
