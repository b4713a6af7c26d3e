"""`studio-worker ui`: the daemon of `run` plus a tray icon and desktop notifications.

When a daemon already runs for the config (the service, say), the tray attaches to it
through its local API instead of starting a second one.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING

from studio_worker.app import EXIT_CONFIG, Daemon, DaemonTuning, registration_poll_s
from studio_worker.config.errors import ConfigError
from studio_worker.config.live import LiveConfig
from studio_worker.config.paths import default_config_path, state_file
from studio_worker.config.redact import SecretRedactor
from studio_worker.config.store import ConfigStore
from studio_worker.localapi.dashboard import dashboard_url
from studio_worker.platform import updater
from studio_worker.platform.lock import DaemonLock
from studio_worker.platform.telemetry import init_telemetry
from studio_worker.status.logsetup import setup_logging

if TYPE_CHECKING:
    from studio_worker.desktop.notices import Notifier

log = logging.getLogger(__name__)


def run_ui(config_path: Path | None) -> int:
    """Entry of `studio-worker ui`: the daemon plus a tray icon and desktop notifications
    (`studio_worker.desktop`); headless with a logged reason when no tray can be had."""
    from studio_worker.desktop.control import InProcessControl
    from studio_worker.desktop.notices import update_notice
    from studio_worker.desktop.shell import desktop_notifier, run_desktop

    redactor = SecretRedactor()
    setup_logging(redactor)
    init_telemetry(redactor)
    config = config_path or default_config_path()
    notifier = desktop_notifier(state_file(config, "notify-icon.png"))
    probe = DaemonLock(state_file(config, "daemon.lock"), state_file(config, "daemon.pid"))
    if not probe.acquire():  # a daemon runs already (e.g. the service): attach to it
        return _attach_ui(config, notifier)
    probe.release()
    tuning = DaemonTuning(registration_tick_s=registration_poll_s(os.environ))
    daemon = Daemon(config, redactor=redactor, tuning=tuning)
    control = InProcessControl(
        status=daemon.status,
        store=daemon.store,
        stop=daemon.stop,
        run=daemon.run,
        dashboard_url=daemon.dashboard_url,
    )
    code = run_desktop(
        control,
        control.serve,
        config_path=daemon.config_path,
        notifier=notifier,
        auto_start=lambda: daemon._live.current.auto_start if daemon._live else None,
        final_notice=lambda: update_notice(daemon.install) if daemon.restart_into else None,
    )
    if daemon.restart_into is not None:
        return updater.restart_process(daemon.restart_into)
    return code


def _attach_ui(config: Path, notifier: Notifier | None) -> int:
    """`ui` beside a daemon of another process: the tray talks to its local API."""
    from studio_worker.desktop.remote import ApiControl
    from studio_worker.desktop.shell import run_desktop

    log.info(
        "a daemon already runs for this config; the tray attaches to it through its local API",
        extra={"op": "tray"},
    )
    store = ConfigStore(config)
    try:
        live = LiveConfig(store, store.load())
    except ConfigError as exc:
        log.error("%s", exc)
        return EXIT_CONFIG
    control = ApiControl(state_file(config, "local-api.json"), dashboard_url=dashboard_url)
    return run_desktop(
        control,
        control.serve,
        config_path=config,
        notifier=notifier,
        auto_start=lambda: live.current.auto_start,
    )
