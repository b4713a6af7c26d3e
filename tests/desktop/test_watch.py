"""The watch loop between the status board and the desktop: notices from real status
changes, the login item following `auto_start`, and `ui` without a display."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.config.ui_prefs import UiPrefs, UiPrefsFile
from studio_worker.desktop.notices import NoticeKind, Notifier, RateLimiter
from studio_worker.desktop.shell import Watch
from studio_worker.protocol.outcomes import SessionState
from studio_worker.status.store import JobRecord, Snapshot, StatusStore


class StoreControl:
    """`DaemonControl` over a bare `StatusStore` (no daemon needed to watch one)."""

    def __init__(self, status: StatusStore) -> None:
        self.status = status

    def snapshot(self) -> Snapshot:
        return self.status.snapshot()

    def set_paused(self, paused: bool) -> None:
        self.status.set_paused(paused)

    def quit(self) -> None:
        pass

    def dashboard_url(self) -> str | None:
        return None


def test_watch_turns_status_changes_into_notices_and_syncs_the_login_item() -> None:
    status = StatusStore()
    sent: list[tuple[str, str]] = []
    notifier = Notifier(
        lambda title, body: sent.append((title, body)) is None,
        limiter=RateLimiter(per_kind_s=0),
    )
    wanted: list[bool | None] = [None]
    synced: list[bool] = []
    watch = Watch(
        StoreControl(status),
        tray=None,
        notifier=notifier,
        auto_start=lambda: wanted[0],
        on_auto_start=synced.append,
        prefs=lambda: UiPrefs(notify_on_failure=True),
    )
    watch.tick()
    assert synced == []  # config not read yet
    wanted[0] = True
    status.set_registration({"state": "pending", "requestId": "r1", "since": "t"})
    watch.tick()
    status.set_registration({"state": "approved"})
    status.set_session(SessionState.CONNECTED)
    status.job_started(JobRecord("j1", "llm", "qwen", "llama-cpp", "hi", "t0"))
    watch.tick()
    status.job_finished("j1", "failed", 10, "model file is corrupt")
    wanted[0] = False
    status.set_session(SessionState.AUTH_FAILED, reason="token revoked")
    watch.stop()  # the last sample, taken as the daemon ends
    notifier.close()
    assert [title for title, _ in sent] == [
        "studio-worker — approved",
        "studio-worker — studio auth failed",
        "studio-worker — job failed",
    ]
    assert sent[2][1] == "llm · qwen — model file is corrupt"
    assert synced == [True, False]
    assert NoticeKind.APPROVED.value == "approved"


def test_job_notices_follow_ui_toml_live(tmp_path: Path) -> None:
    """A completed job is a notification only while `notify_on_completion` is on in ui.toml,
    and a change to the file (the dashboard's PUT /ui/prefs) applies to the next sample."""
    status = StatusStore()
    sent: list[tuple[str, str]] = []
    notifier = Notifier(
        lambda title, body: sent.append((title, body)) is None,
        limiter=RateLimiter(per_kind_s=0),
    )
    prefs = UiPrefsFile(tmp_path / "config.toml")
    watch = Watch(StoreControl(status), tray=None, notifier=notifier, prefs=prefs.current)

    def run_job(job_id: str, outcome: str, error: str | None = None) -> None:
        status.job_started(JobRecord(job_id, "image", "sd-tiny", "sd-cpp", "a cat", "t0"))
        watch.tick()
        status.job_finished(job_id, outcome, 10, error)
        watch.tick()

    watch.tick()
    run_job("off-1", "completed")  # no ui.toml: both off
    run_job("off-2", "failed", "oom")
    UiPrefsFile(tmp_path / "config.toml").update({"notify_on_completion": True})
    run_job("on-1", "completed")
    run_job("off-3", "failed", "oom")  # notify_on_failure is still off
    prefs.path.write_text("notify_on_failure = true\n")  # by hand: completion off again
    run_job("off-4", "completed")
    run_job("on-2", "failed", "engine crashed")
    notifier.close()
    assert sent == [
        ("studio-worker — job completed", "image · sd-tiny"),
        ("studio-worker — job failed", "image · sd-tiny — engine crashed"),
    ]


def test_ui_without_a_display_runs_headless(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    ConfigStore(config).save(
        Settings(
            api_base_url="http://127.0.0.1:9",
            models_root=tmp_path / "models",
            auto_update_enabled=False,
            auto_start=False,
            local_api_port=0,
        )
    )
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    env["HOME"] = str(tmp_path / "home")
    env["XDG_CONFIG_HOME"] = str(tmp_path / "home" / ".config")
    proc = subprocess.Popen(
        [sys.executable, "-m", "studio_worker", "--config", str(config), "ui"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    discovery = tmp_path / "local-api.json"
    try:
        deadline = time.monotonic() + 60
        while not discovery.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.1)
        assert discovery.exists(), "the daemon never served its local API"
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, out
    assert "no tray icon" in out
    assert "running headless" in out
    assert "shutdown signal received" in out
    assert not (tmp_path / "home" / ".config" / "autostart").exists()  # auto_start off
