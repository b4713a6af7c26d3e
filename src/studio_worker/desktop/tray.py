"""The pystray adapter: a tray icon whose colour and menu follow the daemon (§12.6).

pystray picks its OS backend at import and, on Linux, connects to the X display right
then, so it is imported only by `load_pystray`, which turns any failure into
`TrayUnavailable` (the caller then runs headless). Everything shown comes from the pure
functions of `state.py`; the menu is rebuilt from them each time pystray asks.
"""

from __future__ import annotations

import logging
import threading
import time
import webbrowser
from collections.abc import Callable
from typing import Any

from studio_worker.desktop.control import DaemonControl
from studio_worker.desktop.icons import icon_image
from studio_worker.desktop.state import Action, TrayState, menu_entries, tooltip, tray_state
from studio_worker.status.store import Snapshot

log = logging.getLogger(__name__)

SHOW_ATTEMPTS = 40
SHOW_RETRY_S = 0.05
INSTALL_HINT = "the tray icon needs pystray: pip install 'studio-worker[desktop]'"


class TrayUnavailable(Exception):
    """No tray here (pystray missing, no display); the message says why."""


def load_pystray() -> Any:
    """Import pystray, or raise `TrayUnavailable` saying why not."""
    try:
        import pystray  # type: ignore[import-untyped, unused-ignore]
    except ImportError as exc:
        if exc.name == "pystray":
            raise TrayUnavailable(INSTALL_HINT) from None
        raise TrayUnavailable(f"pystray cannot start: {exc}") from None
    except Exception as exc:  # Xlib's DisplayNameError / DisplayConnectionError and kin
        raise TrayUnavailable(f"no display for a tray icon ({type(exc).__name__}: {exc})") from None
    return pystray


class TrayApp:
    """One pystray `Icon` driven by a `DaemonControl`.

    `run()` blocks the calling thread (the main thread: macOS needs it) until `stop()`,
    which any thread may call, before or after `run()` started.
    """

    def __init__(
        self,
        control: DaemonControl,
        pystray: Any,
        *,
        open_url: Callable[[str], object] = webbrowser.open,
    ) -> None:
        self._control = control
        self._pystray = pystray
        self._open_url = open_url
        snap = control.snapshot()
        self.state = tray_state(snap)
        self._title = tooltip(snap)
        self._menu = menu_entries(snap, dashboard=control.dashboard_url() is not None)
        self.icon: Any = pystray.Icon(
            "studio-worker",
            icon=icon_image(self.state),
            title=self._title,
            menu=pystray.Menu(self._items),
        )
        self.ready = threading.Event()
        """Set once the icon is shown and its menu can be used."""
        self._lock = threading.Lock()
        self._running = False
        self._stop_requested = False

    # -- the menu --------------------------------------------------------------------

    def _items(self) -> tuple[Any, ...]:
        snap = self._control.snapshot()
        entries = menu_entries(snap, dashboard=self._control.dashboard_url() is not None)
        return tuple(
            self._pystray.MenuItem(
                entry.label,
                self._handler(entry.action),
                enabled=entry.enabled,
                default=entry.default,
            )
            for entry in entries
        )

    def _handler(self, action: Action) -> Callable[[Any, Any], None]:
        def handle(icon: Any, item: Any) -> None:
            self.perform(action)

        return handle

    def perform(self, action: Action) -> None:
        """What a menu item does; failures are logged, never raised into pystray."""
        log.info("tray: %s", action.value.replace("_", " "), extra={"op": "tray"})
        try:
            if action is Action.OPEN_DASHBOARD:
                url = self._control.dashboard_url()
                if url is None:
                    log.warning("the dashboard is not available: the local API is not up")
                else:
                    self._open_url(url)
            elif action is Action.PAUSE:
                self._control.set_paused(True)
            elif action is Action.RESUME:
                self._control.set_paused(False)
            elif action is Action.QUIT:
                self._control.quit()
        except Exception:
            log.exception("tray action %s failed", action.value, extra={"op": "tray"})
        self.refresh(self._control.snapshot())

    # -- what it shows ---------------------------------------------------------------

    def refresh(self, snapshot: Snapshot | None) -> TrayState:
        """Follow the status board: icon colour, tooltip, menu labels."""
        state, title = tray_state(snapshot), tooltip(snapshot)
        if state is not self.state:
            self.state = state
            self.icon.icon = icon_image(state)
        if title != self._title:
            self._title = title
            self.icon.title = title
        menu = menu_entries(snapshot, dashboard=self._control.dashboard_url() is not None)
        if menu != self._menu:  # native menus are rebuilt only when they change
            self._menu = menu
            self.icon.update_menu()
        return state

    # -- life ------------------------------------------------------------------------

    def run(self) -> None:
        self.icon.run(setup=self._setup)

    def _setup(self, icon: Any) -> None:
        try:
            self._show(icon)
        finally:  # shown or not, the icon's loop runs and stop() must be able to end it
            self._mark_running()

    @staticmethod
    def _show(icon: Any) -> None:
        # pystray 0.19's xorg backend calls setup before it records its loop thread, and
        # showing from here fails until it has (AttributeError); retry briefly.
        for _ in range(SHOW_ATTEMPTS - 1):
            try:
                icon.visible = True
            except AttributeError:
                time.sleep(SHOW_RETRY_S)
            else:
                return
        icon.visible = True

    def _mark_running(self) -> None:
        with self._lock:
            self._running = True
            stop_now = self._stop_requested
        self.ready.set()
        if stop_now:
            self._stop_icon()

    def stop(self) -> None:
        with self._lock:
            self._stop_requested = True
            running = self._running
        if running:
            self._stop_icon()

    def _stop_icon(self) -> None:
        # hide first: with a tray manager present, stop() from another thread hangs
        # otherwise (pystray 0.19)
        self.icon.visible = False
        self.icon.stop()
