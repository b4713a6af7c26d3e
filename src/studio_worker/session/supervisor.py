"""The session loop (protocol §3.1, §3.9): wait for credentials, connect, reconnect forever.

Returns only when stopped, on a terminal end (auth failed, fatal server error) or when a
finite `ws_reconnect_attempts` cap is reached.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from studio_worker.domain.capabilities import WorkerCapabilities
from studio_worker.jobs.dispatcher import Dispatcher
from studio_worker.protocol.backoff import GiveUp, ReconnectPolicy, Retry, Terminal
from studio_worker.protocol.outcomes import EndKind, SessionEnd, SessionState
from studio_worker.protocol.session import SessionMachine
from studio_worker.protocol.urls import StudioLink
from studio_worker.session.attempt import SessionAttempt, Timing
from studio_worker.session.connect import ConnectFailed, UpgradeAuthFailed, open_socket
from studio_worker.session.outbox import Outbox
from studio_worker.status.shiplog import Breadcrumbs, ShipQueue
from studio_worker.status.store import StatusStore

log = logging.getLogger(__name__)

CREDENTIALS_POLL_S = 1.0


class ReconnectCapReached(Exception):
    pass


class SessionSupervisor:
    def __init__(
        self,
        *,
        link: Callable[[], StudioLink | None],
        capabilities: Callable[[], WorkerCapabilities],
        reconnect_cap: Callable[[], int],
        dispatcher: Dispatcher,
        outbox: Outbox,
        status: StatusStore,
        crumbs: Breadcrumbs,
        ship: ShipQueue,
        timing: Timing | None = None,
        backoff_scale: float = 1.0,
    ) -> None:
        self._link = link
        self._capabilities = capabilities
        self._reconnect_cap = reconnect_cap
        self._dispatcher = dispatcher
        self._outbox = outbox
        self._status = status
        self._crumbs = crumbs
        self._ship = ship
        self._timing = timing or Timing()
        self._backoff_scale = backoff_scale  # tests shrink the waits, never the rule

    async def run(self, stop: asyncio.Event) -> SessionEnd:
        """The final end: STOPPED, AUTH_FAILED, FATAL; raises ReconnectCapReached."""
        policy = ReconnectPolicy(self._reconnect_cap())
        while True:
            link = await self._wait_for_link(stop)
            if link is None:
                return self._finish(SessionEnd(EndKind.STOPPED, "stopped"))
            end = await self._attempt(link, stop)
            if stop.is_set():
                return self._finish(SessionEnd(EndKind.STOPPED, "stopped"))
            decision = policy.after(end)
            match decision:
                case Terminal(final):
                    return self._finish(final)
                case GiveUp(attempts):
                    self._crumbs("error", "ws", f"giving up after {attempts} reconnect attempts")
                    self._status.set_session(SessionState.STOPPED, reason="reconnect cap reached")
                    raise ReconnectCapReached("ws reconnect cap reached")
                case Retry(attempt, delay_ms):
                    self._log_retry(end, attempt, delay_ms)
                    self._status.set_session(SessionState.RECONNECTING, attempt=attempt)
                    await _wait(stop, delay_ms / 1000 * self._backoff_scale)

    async def _wait_for_link(self, stop: asyncio.Event) -> StudioLink | None:
        announced = False
        while not stop.is_set():
            link = self._link()
            if link is not None:
                return link
            if not announced:
                self._status.set_session(SessionState.WAITING_FOR_APPROVAL)
                log.info("waiting for operator approval before opening the session")
                announced = True
            await _wait(stop, CREDENTIALS_POLL_S)
        return None

    async def _attempt(self, link: StudioLink, stop: asyncio.Event) -> SessionEnd:
        if self._status.snapshot().session_state is not SessionState.RECONNECTING:
            self._status.set_session(SessionState.CONNECTING)
        self._status.set_worker_id(link.worker_id)
        log.info("connecting to %s", link.base_url, extra={"op": "connect"})
        try:
            ws = await open_socket(link)
        except UpgradeAuthFailed as exc:
            return SessionEnd(EndKind.AUTH_FAILED, str(exc))
        except ConnectFailed as exc:
            log.warning("connect failed: %s", exc, extra={"op": "connect"})
            return SessionEnd(EndKind.ERROR, str(exc))
        capabilities = self._capabilities()
        self._advertise(capabilities)
        machine = SessionMachine(link.auth_token, capabilities)
        attempt = SessionAttempt(
            ws,
            machine,
            dispatcher=self._dispatcher,
            outbox=self._outbox,
            status=self._status,
            crumbs=self._crumbs,
            ship=self._ship,
            capabilities=self._capabilities,
            timing=self._timing,
            on_welcome=lambda: self._status.set_session(SessionState.CONNECTED),
        )
        return await attempt.run(stop)

    def _advertise(self, caps: WorkerCapabilities) -> None:
        kinds = ", ".join(kind.value for kind in caps.task_kinds)
        log.info(
            "advertising engine=%s, vram=%.1f/%.1fGB threshold, auto_enabled=%s, kinds=[%s], "
            "%d model(s)=[%s]",
            caps.engine,
            caps.vram_total_gb,
            caps.vram_threshold_gb,
            str(caps.auto_enabled).lower(),
            kinds,
            len(caps.supported_models),
            ", ".join(caps.supported_models),
        )
        if 0 < caps.vram_total_gb < caps.vram_threshold_gb:
            log.warning(
                "configured VRAM threshold %.1fGB exceeds detected GPU VRAM %.1fGB; the studio "
                "may offer jobs larger than this card can fit and they will OOM on load — "
                "lower vram_threshold_gb to at or below %.1fGB",
                caps.vram_threshold_gb,
                caps.vram_total_gb,
                caps.vram_total_gb,
            )

    def _log_retry(self, end: SessionEnd, attempt: int, delay_ms: int) -> None:
        if end.kind is EndKind.DISCONNECTED:
            log.info("session ended: %s", end.reason, extra={"op": "connect"})
            log.warning("disconnected; reconnect attempt %d in %dms", attempt, delay_ms)
        else:
            log.warning(
                "session error: %s; reconnect attempt %d in %dms", end.reason, attempt, delay_ms
            )

    def _finish(self, end: SessionEnd) -> SessionEnd:
        if end.kind is EndKind.AUTH_FAILED:
            self._status.set_session(SessionState.AUTH_FAILED, reason=end.reason)
            log.error("auth failed: %s. Re-register the worker.", end.reason)
        elif end.kind is EndKind.FATAL:
            self._status.set_session(SessionState.FATAL, reason=end.reason)
            log.error("fatal: %s", end.reason)
        else:
            self._status.set_session(SessionState.STOPPED)
        return end


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    """Sleep, waking at once when stop is set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(seconds):
            await stop.wait()
