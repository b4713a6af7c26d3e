"""`studio-worker ui`'s layout with the real pystray icon under Xvfb, on a real daemon:
the menu pauses, resumes and quits the daemon and opens the dashboard."""

from __future__ import annotations

import atexit
import gc
import importlib.util
import json
import logging
import os
import shutil
import subprocess
import threading
import tomllib
from pathlib import Path
from typing import Any

import pytest

from studio_worker.app import Daemon, DaemonTuning
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.desktop.control import DaemonControl, InProcessControl
from studio_worker.desktop.icons import icon_image
from studio_worker.desktop.shell import run_desktop
from studio_worker.desktop.state import TrayState
from studio_worker.desktop.tray import TrayApp, load_pystray

pytest.importorskip("PIL")
WAIT_S = 30.0


@pytest.fixture(scope="session")
def xvfb() -> str:
    """An Xvfb display for this test process. It is ended at exit, not at teardown: a
    pystray loop that missed its stop (see desktop/shell.py) must not meet a closed
    display while pytest still runs."""
    exe = shutil.which("Xvfb")
    if exe is None:
        pytest.skip("Xvfb is not installed (Debian: apt-get install xvfb)")
    read, write = os.pipe()
    proc = subprocess.Popen(
        [exe, "-displayfd", str(write), "-nolisten", "tcp", "-screen", "0", "640x480x24"],
        pass_fds=(write,),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    os.close(write)
    with os.fdopen(read) as announced:
        number = announced.readline().strip()  # Xvfb writes it once it accepts clients
    if not number:
        proc.kill()
        pytest.fail("Xvfb did not start")
    atexit.register(proc.kill)
    return f":{number}"


def _wait(check: Any, what: str) -> None:
    done = threading.Event()
    for _ in range(int(WAIT_S / 0.05)):
        if check():
            return
        done.wait(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def _item(tray: TrayApp, label: str) -> Any:
    items = {str(item): item for item in tray.icon.menu.items}
    assert label in items, f"{label!r} not in the menu {list(items)}"
    return items[label]


def test_tray_menu_drives_the_daemon(
    xvfb: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if importlib.util.find_spec("pystray") is None:  # importing it needs the display
        pytest.skip("pystray is not installed (the desktop extra)")
    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.setenv("PYSTRAY_BACKEND", "xorg")
    # Xvfb has no tray manager: pystray logs "Failed to dock icon" with a traceback, whose
    # frames would keep the icon (and its X connection) alive in pytest's log capture
    monkeypatch.setattr(logging.getLogger("pystray"), "level", logging.CRITICAL)
    home = tmp_path / "home"
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(home / ".config"))
    config = tmp_path / "worker" / "config.toml"
    ConfigStore(config).save(
        Settings(
            api_base_url="http://127.0.0.1:9",  # no studio: the tray needs none
            models_root=tmp_path / "models",
            auto_update_enabled=False,
            local_api_port=0,
        )
    )
    daemon = Daemon(config, tuning=DaemonTuning(registration_tick_s=0.2))
    control = InProcessControl(
        status=daemon.status,
        store=daemon.store,
        stop=daemon.stop,
        run=daemon.run,
        dashboard_url=daemon.dashboard_url,
    )
    trays: list[TrayApp] = []
    opened: list[str] = []

    def make_tray(c: DaemonControl) -> TrayApp:
        trays.append(TrayApp(c, load_pystray(), open_url=opened.append))
        return trays[-1]

    failures: list[BaseException] = []

    def drive() -> None:
        try:
            _wait(lambda: trays and trays[0].ready.is_set(), "the tray icon")
            tray = trays[0]
            _wait(lambda: daemon.dashboard_url() is not None, "the local API")
            assert tray.state is TrayState.IDLE

            _item(tray, "Pause claiming")(tray.icon)
            assert daemon.status.paused
            assert tomllib.loads(config.read_text())["paused"] is True
            assert tray.state is TrayState.PAUSED
            assert tray.icon.icon.tobytes() == icon_image(TrayState.PAUSED).tobytes()

            _item(tray, "Resume claiming")(tray.icon)  # the label followed the daemon
            assert not daemon.status.paused
            assert tomllib.loads(config.read_text())["paused"] is False
            assert tray.state is TrayState.IDLE

            _item(tray, "Open dashboard")(tray.icon)
            found = json.loads((config.parent / "local-api.json").read_text())
            assert opened == [f"{found['url']}/#token={found['token']}"]

            _item(tray, "Quit")(tray.icon)
        except BaseException as exc:
            failures.append(exc)
            control.quit()

    driver = threading.Thread(target=drive, name="test-driver")
    driver.start()
    code = run_desktop(
        control,
        control.serve,
        config_path=config,
        notifier=None,
        auto_start=lambda: daemon._live.current.auto_start if daemon._live else None,
        tray_factory=make_tray,
    )
    driver.join(WAIT_S)
    trays.clear()
    gc.collect()  # the icon closes its X connection now, while Xvfb still runs
    if failures:
        raise failures[0]
    assert code == 0
    assert daemon.stop.is_set()  # Quit went through the daemon's graceful stop
    assert not (config.parent / "local-api.json").exists()  # removed on a clean exit
    entry = home / ".config" / "autostart" / "studio-worker-ui.desktop"
    assert entry.exists()  # auto_start (default on) synced the login item at start
    assert f"--config {config} ui" in entry.read_text()
