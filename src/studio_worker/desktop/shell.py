"""The thread layout of `studio-worker ui`: the daemon, a tray icon and a watch loop.

The daemon's event loop runs on the main thread and the tray's loop on a thread of its
own, except on macOS, where AppKit wants the tray on the main thread and the daemon gets
the thread instead; a watch thread samples the status board once a second
(§12.2's poll rate), repaints the tray and turns changes into notifications (the job ones
as `ui.toml` asks, read live). Without a tray (no display, no pystray) the daemon runs on
the main thread and the watch loop still sends notifications. Closing a browser tab never
stops anything: only Quit, a signal, or the daemon ending by itself (an update restart,
the studio refusing it) does.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from studio_worker.config.ui_prefs import UiPrefs, UiPrefsFile
from studio_worker.desktop import autostart
from studio_worker.desktop.control import DaemonControl
from studio_worker.desktop.icons import icon_image
from studio_worker.desktop.notices import Notice, Notifier, notices_between
from studio_worker.desktop.state import TrayState
from studio_worker.desktop.tray import TrayApp, TrayUnavailable, load_pystray
from studio_worker.platform import services
from studio_worker.status.store import Snapshot

log = logging.getLogger(__name__)

WATCH_INTERVAL_S = 1.0
TRAY_STOP_GRACE_S = 3.0


class Watch:
    """Samples the status board on a thread: repaint the tray, post notices, keep the login
    item in step with `auto_start`. `stop()` takes one last sample (the daemon may have
    ended on an auth failure worth a notice). `prefs` gives the window preferences at each
    sample (`UiPrefsFile.current`), so a change to `ui.toml` applies to the next one."""

    def __init__(
        self,
        control: DaemonControl,
        *,
        tray: TrayApp | None,
        notifier: Notifier | None,
        auto_start: Callable[[], bool | None] | None = None,
        on_auto_start: Callable[[bool], None] | None = None,
        prefs: Callable[[], UiPrefs] = UiPrefs,
        interval_s: float = WATCH_INTERVAL_S,
    ) -> None:
        self._control = control
        self._prefs = prefs
        self._tray = tray
        self._notifier = notifier
        self._auto_start = auto_start
        self._on_auto_start = on_auto_start
        self._interval_s = interval_s
        self._done = threading.Event()
        self._thread: threading.Thread | None = None
        self._last: Snapshot | None = control.snapshot()
        self._auto: bool | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="tray-watch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None
        self.tick()

    def _loop(self) -> None:
        while not self._done.wait(self._interval_s):
            try:
                self.tick()
            except Exception:  # keep watching; the next second may do better
                log.exception("tray watch failed", extra={"op": "tray"})

    def tick(self) -> None:
        snap = self._control.snapshot()
        if self._tray is not None:
            self._tray.refresh(snap)
        if snap is not None:  # None: the daemon did not answer this time
            if self._notifier is not None and self._last is not None:
                for notice in notices_between(self._last, snap, self._prefs()):
                    self._notifier.post(notice)
            self._last = snap
        if self._auto_start is not None and self._on_auto_start is not None:
            wanted = self._auto_start()  # None until the daemon has read its config
            if wanted is not None and wanted != self._auto:
                self._auto = wanted
                self._on_auto_start(wanted)


def login_argv(config_path: Path) -> list[str]:
    """What the login item runs: this studio-worker, `--config <path> ui` (the same
    executable `install-service` would pick)."""
    exe, launcher = services.locate_executable(
        argv0=sys.argv[0],
        executable=sys.executable,
        compiled="__compiled__" in globals() or bool(getattr(sys, "frozen", False)),
        which=shutil.which,
        windows=sys.platform == "win32",
    )
    return autostart.ui_argv(exe, config_path.absolute(), launcher)


def sync_login_item(config_path: Path, enabled: bool) -> None:
    """Match the login item to `auto_start`; a failure is a warning (§13.1)."""
    try:
        argv = login_argv(config_path) if enabled else None
        autostart.sync(services.ServiceHost.current(), argv)
    except (autostart.AutostartError, services.ServiceError, OSError) as exc:
        log.warning("login item not synced: %s", exc, extra={"op": "autostart"})


@contextlib.contextmanager
def _quit_on_signals(control: DaemonControl) -> Iterator[None]:
    """SIGINT/SIGTERM ask the daemon to stop gracefully (main thread only)."""

    def handler(signum: int, frame: Any) -> None:
        log.info("shutdown signal received; stopping worker gracefully", extra={"op": "shutdown"})
        control.quit()

    signals = [signal.SIGINT, signal.SIGTERM]
    previous = {sig: signal.signal(sig, handler) for sig in signals}
    try:
        yield
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)


def run_desktop(
    control: DaemonControl,
    serve: Callable[[], int],
    *,
    config_path: Path,
    notifier: Notifier | None,
    auto_start: Callable[[], bool | None],
    final_notice: Callable[[], Notice | None] = lambda: None,
    tray_factory: Callable[[DaemonControl], TrayApp] | None = None,
) -> int:
    """Run the daemon (`serve` returns its exit code) with a tray when one can be had.

    The login item follows `auto_start` (None until the daemon has read its config): set
    on the first watch tick (§12.1 step 4), then whenever the key changes."""
    tray: TrayApp | None = None
    try:
        tray = (tray_factory or _pystray_tray)(control)
    except TrayUnavailable as exc:
        log.warning(
            "no tray icon: %s; running headless (the dashboard is at the local API's URL, "
            "see local-api.json next to the config)",
            exc,
            extra={"op": "tray"},
        )
    watch = Watch(
        control,
        tray=tray,
        notifier=notifier,
        auto_start=auto_start,
        on_auto_start=lambda on: sync_login_item(config_path, on),
        prefs=UiPrefsFile(config_path).current,
    )
    with _quit_on_signals(control):
        watch.start()  # before the daemon: the watch's first sample is the baseline
        code = serve() if tray is None else _serve_with_tray(tray, serve)
    watch.stop()
    if notifier is not None:
        last = final_notice()
        if last is not None:
            notifier.deliver(last)  # not rate-limited: the process is about to go
        notifier.close()
    return code


def _pystray_tray(control: DaemonControl) -> TrayApp:
    return TrayApp(control, load_pystray())


def _serve_with_tray(tray: TrayApp, serve: Callable[[], int]) -> int:
    if sys.platform == "darwin":  # AppKit wants the tray on the main thread
        return _serve_beside(tray, serve)
    # Elsewhere the tray's loop runs on a daemon thread and the daemon on the main one:
    # stopping pystray's X loop from another thread can hang (python-xlib 0.33 sometimes
    # loses the window's DestroyNotify), and a stuck tray must never keep the process up.
    loop = threading.Thread(target=_run_tray, args=(tray,), name="tray", daemon=True)
    loop.start()
    try:
        return serve()
    finally:
        threading.Thread(target=tray.stop, name="tray-stop", daemon=True).start()
        loop.join(TRAY_STOP_GRACE_S)
        if loop.is_alive():
            log.debug("the tray loop did not end in time; the exit ends it", extra={"op": "tray"})


def _run_tray(tray: TrayApp) -> None:
    try:
        tray.run()
    except Exception:  # the worker carries on without its icon until Quit or a signal
        log.exception("the tray icon failed; running headless", extra={"op": "tray"})


def _serve_beside(tray: TrayApp, serve: Callable[[], int]) -> int:
    """macOS: the daemon on a thread, the tray on the main thread until stopped."""
    result: list[int] = []

    def daemon_thread() -> None:
        try:
            result.append(serve())
        except BaseException:
            log.exception("the daemon crashed", extra={"op": "shutdown"})
            result.append(1)
        finally:
            tray.stop()

    thread = threading.Thread(target=daemon_thread, name="daemon")
    thread.start()
    _run_tray(tray)
    thread.join()
    return result[0] if result else 1


def desktop_notifier(icon: Path) -> Notifier | None:
    """A `Notifier` through notify-py, or None (logged) when notify-py cannot run here.
    `icon`: where to save the idle tray icon as the notifications' picture."""
    from studio_worker.desktop.notify import NotifyUnavailable, notify_py_sender

    with contextlib.suppress(OSError):
        icon.parent.mkdir(parents=True, exist_ok=True)
        icon_image(TrayState.IDLE, 128).save(icon, format="PNG")
    try:
        return Notifier(notify_py_sender(icon))
    except NotifyUnavailable as exc:
        log.warning("no desktop notifications: %s", exc, extra={"op": "notify"})
        return None
