"""A fake `notify-send` on PATH that records its arguments, for the real notify-py call
path (on Linux notify-py runs `notify-send`). Scripts run in a fresh interpreter, because
notify-py looks `notify-send` up once, when it is first imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

FAKE = """#!/bin/sh
for arg in "$@"; do printf '%s\\n' "$arg" >> "$RECORD"; done
printf '%s\\n' '--end--' >> "$RECORD"
exit "${FAKE_EXIT:-0}"
"""


def run_with_fake_notify_send(
    tmp_path: Path, script: str, *args: str, fake: bool = True, exit_code: int = 0
) -> tuple[str, list[list[str]]]:
    """Run `script` (`python -c`) with only the fake on PATH; (its stderr, the argv of each
    `notify-send` call)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "argv.txt"
    if fake:
        fake_script = bin_dir / "notify-send"
        fake_script.write_text(FAKE)
        fake_script.chmod(0o755)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DBUS_SESSION_BUS_ADDRESS", "notifypyEnableLogging")
    }
    env.update(PATH=str(bin_dir), RECORD=str(record), FAKE_EXIT=str(exit_code))
    done = subprocess.run(
        [sys.executable, "-c", script, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    calls: list[list[str]] = []
    if record.exists():
        current: list[str] = []
        for line in record.read_text().splitlines():
            if line == "--end--":
                calls.append(current)
                current = []
            else:
                current.append(line)
    return done.stderr, calls
