"""The real notify-py call path: on Linux it runs `notify-send`, here a fake on PATH that
records its arguments. Each case runs in a fresh interpreter, because notify-py looks
`notify-send` up once, when it is first imported."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("notifypy", reason="notify-py is not installed (the desktop extra)")
if not sys.platform.startswith("linux"):
    pytest.skip("notify-py runs notify-send on Linux only", allow_module_level=True)

SCRIPT = """
import logging, sys
from pathlib import Path
logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(levelname)s %(message)s")
from studio_worker.desktop.icons import icon_image
from studio_worker.desktop.notices import Notice, NoticeKind, Notifier, RateLimiter
from studio_worker.desktop.notify import notify_py_sender
from studio_worker.desktop.state import TrayState
icon = Path(sys.argv[2])
icon_image(TrayState.IDLE).save(icon)
notifier = Notifier(notify_py_sender(icon), limiter=RateLimiter(per_kind_s=0))
for n in range(int(sys.argv[1])):
    notifier.post(Notice(NoticeKind.JOB_FAILED, "studio-worker — job failed", f"image · m — {n}"))
notifier.close()
"""

FAKE = """#!/bin/sh
for arg in "$@"; do printf '%s\\n' "$arg" >> "$RECORD"; done
printf '%s\\n' '--end--' >> "$RECORD"
exit "${FAKE_EXIT:-0}"
"""


def run(
    tmp_path: Path, count: int, *, fake: bool, exit_code: int = 0
) -> tuple[str, list[list[str]]]:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    record = tmp_path / "argv.txt"
    if fake:
        script = bin_dir / "notify-send"
        script.write_text(FAKE)
        script.chmod(0o755)
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("DBUS_SESSION_BUS_ADDRESS", "notifypyEnableLogging")
    }
    env.update(PATH=str(bin_dir), RECORD=str(record), FAKE_EXIT=str(exit_code))
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, str(count), str(tmp_path / "icon.png")],
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


def test_a_notice_runs_notify_send(tmp_path: Path) -> None:
    stderr, calls = run(tmp_path, 1, fake=True)
    assert len(calls) == 1
    argv = calls[0]
    assert argv[:2] == ["studio-worker — job failed", "image · m — 0"]
    assert "--app-name=studio-worker" in argv
    assert f"--icon={tmp_path / 'icon.png'}" in argv
    assert "notification shown: studio-worker — job failed" in stderr
    assert "unavailable" not in stderr


def test_a_refusing_service_is_logged_once(tmp_path: Path) -> None:
    stderr, calls = run(tmp_path, 3, fake=True, exit_code=1)
    assert len(calls) == 3  # every notice was tried
    assert stderr.count("desktop notifications are unavailable") == 1
    assert "notification shown" not in stderr


def test_no_notification_service_at_all(tmp_path: Path) -> None:
    stderr, calls = run(tmp_path, 2, fake=False)
    assert calls == []
    assert stderr.count("desktop notifications are unavailable") == 1
