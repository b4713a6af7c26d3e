"""The real notify-py call path: on Linux it runs `notify-send`, here a fake on PATH that
records its arguments (`fake_notify_send`). Each case runs in a fresh interpreter, because
notify-py looks `notify-send` up once, when it is first imported."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from .fake_notify_send import run_with_fake_notify_send

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


def run(
    tmp_path: Path, count: int, *, fake: bool, exit_code: int = 0
) -> tuple[str, list[list[str]]]:
    icon = str(tmp_path / "icon.png")
    return run_with_fake_notify_send(
        tmp_path, SCRIPT, str(count), icon, fake=fake, exit_code=exit_code
    )


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


JOB_SCRIPT = """
import logging, sys
from pathlib import Path


class Show(logging.Handler):
    def emit(self, record):
        print(record.levelname, getattr(record, "op", "-"), record.getMessage(), file=sys.stderr)


logging.basicConfig(level=logging.INFO, handlers=[Show()])
from studio_worker.config.ui_prefs import UiPrefsFile
from studio_worker.desktop.notices import Notifier, RateLimiter
from studio_worker.desktop.notify import notify_py_sender
from studio_worker.desktop.shell import Watch
from studio_worker.status.store import JobRecord, StatusStore


class Control:
    def __init__(self, status):
        self.status = status

    def snapshot(self):
        return self.status.snapshot()


status = StatusStore()
prefs = UiPrefsFile(Path(sys.argv[1]))
notifier = Notifier(notify_py_sender(None), limiter=RateLimiter(per_kind_s=0))
watch = Watch(Control(status), tray=None, notifier=notifier, prefs=prefs.current)
watch.tick()
for n, step in enumerate(sys.argv[2:]):
    if step.startswith("set:"):
        key, value = step[4:].split("=")
        UiPrefsFile(Path(sys.argv[1])).update({key: value == "on"})
        continue
    job_id = f"job-{n}"
    status.job_started(JobRecord(job_id, "image", "sd-tiny", "sd-cpp", "a cat", "t0"))
    watch.tick()
    status.job_finished(job_id, step, 10, "out of memory" if step == "failed" else None)
    watch.tick()
notifier.close()
"""


def test_a_completed_job_notifies_through_notify_send_only_with_the_pref_on(
    tmp_path: Path,
) -> None:
    config = str(tmp_path / "config.toml")
    steps = ["completed", "failed", "set:notify_on_completion=on", "completed", "failed"]
    stderr, calls = run_with_fake_notify_send(tmp_path, JOB_SCRIPT, config, *steps)
    assert [argv[:2] for argv in calls] == [["studio-worker — job completed", "image · sd-tiny"]]
    assert "--app-name=studio-worker" in calls[0]
    assert "INFO show notification shown: studio-worker — job completed" in stderr


def test_a_failed_job_notifies_with_its_reason_only_with_the_pref_on(tmp_path: Path) -> None:
    config = str(tmp_path / "config.toml")
    steps = ["failed", "set:notify_on_failure=on", "completed", "failed"]
    stderr, calls = run_with_fake_notify_send(tmp_path, JOB_SCRIPT, config, *steps)
    assert [argv[:2] for argv in calls] == [
        ["studio-worker — job failed", "image · sd-tiny — out of memory"]
    ]
    assert "INFO show notification shown: studio-worker — job failed" in stderr
