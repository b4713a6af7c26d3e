"""`ui` beside a daemon of another process: the tray's control over the local API, and a
real `studio-worker ui` attaching to a running daemon and notifying from its status."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from studio_worker.app import Daemon, DaemonTuning
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.config.ui_prefs import UiPrefsFile
from studio_worker.desktop.control import InProcessControl
from studio_worker.desktop.remote import ApiControl, snapshot_from_status
from studio_worker.localapi.dashboard import dashboard_url
from studio_worker.protocol.outcomes import SessionState
from studio_worker.status.store import JobRecord

from .snapshots import job, snap

FAKE_NOTIFY_SEND = """#!/bin/sh
printf '%s\\n' "$1" >> "$RECORD"
"""


def test_snapshot_from_status_reads_back_the_status_board() -> None:
    for original in (
        snap(),
        snap(paused=True, current_job=job("j2"), recent_jobs=(job("j1", "failed", "oom"),)),
        snap(session_state=SessionState.RECONNECTING, session_attempt=3),
        snap(session_state=SessionState.AUTH_FAILED, session_reason="revoked"),
        snap(registration={"state": "rejected", "reason": "no"}, worker_id=None),
    ):
        back = snapshot_from_status({**original.to_json(), "version": "x", "config": {}})
        assert back.session_state is original.session_state
        assert back.session_attempt == original.session_attempt
        assert back.session_reason == original.session_reason
        assert back.registration == original.registration
        assert back.paused == original.paused
        assert back.worker_id == original.worker_id
        assert back.current_job == original.current_job
        assert back.recent_jobs == original.recent_jobs
    assert snapshot_from_status({"session": {"state": "from-the-future"}}).session_state is (
        SessionState.STOPPED
    )


@dataclass
class Running:
    daemon: Daemon
    config: Path
    discovery: Path


@pytest.fixture
def running_daemon(tmp_path: Path) -> Iterator[Running]:
    config = tmp_path / "worker" / "config.toml"
    ConfigStore(config).save(
        Settings(
            api_base_url="http://127.0.0.1:9",
            models_root=tmp_path / "models",
            auto_update_enabled=False,
            auto_start=False,
            local_api_port=0,
        )
    )
    daemon = Daemon(config, tuning=DaemonTuning(registration_tick_s=30))
    control = InProcessControl(
        status=daemon.status,
        store=daemon.store,
        stop=daemon.stop,
        run=daemon.run,
        dashboard_url=daemon.dashboard_url,
    )
    thread = threading.Thread(target=control.serve, name="daemon-under-test")
    thread.start()
    discovery = config.parent / "local-api.json"
    try:
        deadline = time.monotonic() + 60
        while not discovery.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert discovery.exists(), "the daemon never served its local API"
        yield Running(daemon, config, discovery)
    finally:
        control.quit()
        thread.join(60)


def test_api_control_drives_a_daemon_of_another_process(running_daemon: Running) -> None:
    daemon = running_daemon.daemon
    control = ApiControl(running_daemon.discovery, dashboard_url=dashboard_url)
    seen = control.snapshot()
    assert seen is not None and seen.paused is False
    control.set_paused(True)
    assert daemon.status.paused
    assert tomllib.loads(running_daemon.config.read_text())["paused"] is True
    seen = control.snapshot()
    assert seen is not None and seen.paused is True
    control.set_paused(False)
    assert not daemon.status.paused
    found = json.loads(running_daemon.discovery.read_text())
    assert control.dashboard_url() == f"{found['url']}/#token={found['token']}"
    control.quit()
    assert control.serve() == 0  # Quit closes the tray only
    assert not daemon.stop.is_set()


def test_api_control_without_a_daemon(tmp_path: Path) -> None:
    control = ApiControl(tmp_path / "local-api.json", dashboard_url=dashboard_url)
    assert control.snapshot() is None
    assert control.dashboard_url() is None
    control.set_paused(True)  # logged, not raised


def test_ui_attaches_to_a_running_daemon_and_notifies(
    running_daemon: Running, tmp_path: Path
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "notify-send").write_text(FAKE_NOTIFY_SEND)
    (bin_dir / "notify-send").chmod(0o755)
    record = tmp_path / "notified.txt"
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DISPLAY", "WAYLAND_DISPLAY", "DBUS_SESSION_BUS_ADDRESS")
    }
    env.update(
        PATH=f"{bin_dir}{os.pathsep}{env.get('PATH', '')}",
        RECORD=str(record),
        HOME=str(tmp_path / "home"),
        XDG_CONFIG_HOME=str(tmp_path / "home" / ".config"),
    )
    # job notices are off by default (behaviour §12.7): the operator asked for failures
    UiPrefsFile(running_daemon.config).update({"notify_on_failure": True})
    ui = subprocess.Popen(
        [sys.executable, "-m", "studio_worker", "--config", str(running_daemon.config), "ui"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    status = running_daemon.daemon.status
    try:
        # the ui takes its baseline, then a job fails in the daemon it watches
        deadline = time.monotonic() + 60
        n = 0
        while time.monotonic() < deadline and ui.poll() is None:
            n += 1  # a new job each time: one that failed before the baseline is old news
            status.job_started(JobRecord(f"j-{n}", "image", "sd-tiny", "sd-cpp", "cat", "t0"))
            status.job_finished(f"j-{n}", "failed", 5, "engine crashed")
            if record.exists() and "job failed" in record.read_text():
                break
            time.sleep(0.5)
        assert ui.poll() is None, ui.communicate()[0]
        assert record.exists(), "no notification was sent"
        assert record.read_text().splitlines()[0] == "studio-worker — job failed"
        ui.send_signal(signal.SIGTERM)
        out, _ = ui.communicate(timeout=60)
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.communicate()
    assert ui.returncode == 0, out
    assert "the tray attaches to it through its local API" in out
    assert not running_daemon.daemon.stop.is_set()  # the daemon keeps running
