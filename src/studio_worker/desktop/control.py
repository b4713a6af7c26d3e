"""The port the tray drives the daemon through (built in `app`, faked in tests)."""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Protocol

from studio_worker.config.store import ConfigStore
from studio_worker.status.store import Snapshot, StatusStore

log = logging.getLogger(__name__)


class DaemonControl(Protocol):
    """What the tray may read and ask of the daemon running in the same process.

    Every method is called from the tray's threads, never the daemon's event loop, and
    must be safe there.
    """

    def snapshot(self) -> Snapshot | None:
        """The status board now; None while the daemon does not answer."""
        ...

    def set_paused(self, paused: bool) -> None:
        """Pause or resume claiming studio jobs, saved like `studio-worker disable|enable`."""
        ...

    def quit(self) -> None:
        """Stop gracefully (the job in flight finishes or is handed back), then exit."""
        ...

    def dashboard_url(self) -> str | None:
        """The address "Open dashboard" opens, or None while the local API is not up."""
        ...


class InProcessControl:
    """`DaemonControl` over a daemon running on an event loop that `serve()` owns, on
    whichever thread calls it. Pause/resume save `paused` exactly as `studio-worker
    disable|enable` and the local API do, and apply it at once; quit sets the daemon's
    stop event on its loop, which is its graceful shutdown (the job in flight gets the
    daemon's grace to finish, else is handed back)."""

    def __init__(
        self,
        *,
        status: StatusStore,
        store: ConfigStore,
        stop: asyncio.Event,
        run: Callable[[], Coroutine[Any, Any, int]],
        dashboard_url: Callable[[], str | None],
    ) -> None:
        self._status = status
        self._store = store
        self._stop = stop
        self._run = run
        self._dashboard_url = dashboard_url
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._quit_early = False

    def serve(self) -> int:
        """Run the daemon to its end on a fresh event loop; its exit code."""
        with asyncio.Runner() as runner:
            with self._lock:
                self._loop = runner.get_loop()
                if self._quit_early:
                    self._stop.set()
            try:
                return runner.run(self._run())
            finally:
                with self._lock:
                    self._loop = None

    def snapshot(self) -> Snapshot:
        return self._status.snapshot()

    def set_paused(self, paused: bool) -> None:
        self._store.update(paused=paused)
        if self._status.set_paused(paused):
            log.info(
                "claiming %s by operator (tray)",
                "paused" if paused else "resumed",
                extra={"op": "control", "action": "pause" if paused else "resume"},
            )

    def quit(self) -> None:
        with self._lock:  # held so that the loop cannot close in between
            if self._loop is None:
                self._quit_early = True
            else:
                self._loop.call_soon_threadsafe(self._stop.set)

    def dashboard_url(self) -> str | None:
        return self._dashboard_url()
