"""One session attempt: carries out what the pure SessionMachine asks (protocol §3.6).

Tasks: the reader (20 s read-idle timer), and after `welcome` the heartbeat pump (5 s),
the log shipper (1 s) and the outbox pump. The first of them to end the session wins;
the rest are cancelled, and the socket is closed with the machine's close code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Coroutine
from typing import Any

from websockets.asyncio.client import ClientConnection
from websockets.exceptions import ConnectionClosed

from studio_worker.domain.capabilities import WorkerCapabilities
from studio_worker.domain.tasks import JobOfferClaim
from studio_worker.jobs.dispatcher import Dispatcher
from studio_worker.protocol.frames import Accept, Heartbeat, LogBatch, encode
from studio_worker.protocol.outcomes import SessionEnd
from studio_worker.protocol.session import (
    Action,
    Close,
    End,
    HandleOffer,
    HeartbeatAcked,
    Log,
    Phase,
    RefuseUnreadableOffer,
    SendHello,
    SessionMachine,
    StartPumps,
)
from studio_worker.session.connect import CLOSE_TIMEOUT_S
from studio_worker.session.outbox import Outbox
from studio_worker.status.shiplog import Breadcrumbs, ShipQueue
from studio_worker.status.store import StatusStore

log = logging.getLogger(__name__)

LOG_BATCH_MAX = 200  # entries in one logBatch frame


class Timing:
    """The session's clocks (behaviour §17); tests shorten them."""

    def __init__(
        self,
        heartbeat_s: float = 5.0,
        log_flush_s: float = 1.0,
        read_idle_s: float = 20.0,
        shutdown_grace_s: float = 5.0,
    ) -> None:
        self.heartbeat_s = heartbeat_s
        self.log_flush_s = log_flush_s
        self.read_idle_s = read_idle_s
        # Stop with a job running: it gets this long to finish (behaviour §1.2), then it
        # is failed retryable; either way its frame leaves before the close 1000.
        self.shutdown_grace_s = shutdown_grace_s


OUTBOX_FLUSH_S = 2.0  # on stop: how long the last frames get to leave
# After the read-idle timeout the link is presumed dead: the close frame is still sent,
# but its answer is awaited this long, not the full 5 s bound (§3.5), so the reconnect —
# and the results waiting for it — land well inside the studio's 30 s hold.
DEAD_LINK_CLOSE_S = 1.0


class SessionAttempt:
    def __init__(
        self,
        ws: ClientConnection,
        machine: SessionMachine,
        *,
        dispatcher: Dispatcher,
        outbox: Outbox,
        status: StatusStore,
        crumbs: Breadcrumbs,
        ship: ShipQueue,
        capabilities: Callable[[], WorkerCapabilities],
        timing: Timing,
        on_welcome: Callable[[], None] = lambda: None,
    ) -> None:
        self._on_welcome = on_welcome
        self._ws = ws
        self._machine = machine
        self._dispatcher = dispatcher
        self._outbox = outbox
        self._status = status
        self._crumbs = crumbs
        self._ship = ship
        self._capabilities = capabilities
        self._timing = timing
        self._group: asyncio.TaskGroup | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._done = asyncio.Event()
        self._end: SessionEnd | None = None
        self._close: Close | None = None
        self._silent = False  # the read-idle timer ended the session

    async def run(self, stop: asyncio.Event) -> SessionEnd:
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                self._spawn(self._watch_stop(stop))
                await self._apply(self._machine.opened())
                self._spawn(self._read())
                await self._done.wait()
                for task in self._tasks:
                    task.cancel()
        finally:
            await self._close_socket()
        assert self._end is not None
        return self._end

    # ---- actions ------------------------------------------------------------------

    async def _apply(self, actions: list[Action]) -> None:
        for action in actions:
            match action:
                case SendHello(frame):
                    await self._send(encode(frame), "hello")
                case StartPumps():
                    self._on_welcome()
                    self._outbox.welcomed()
                    self._dispatcher.welcomed()
                    self._start_pumps()
                case HandleOffer(claim):
                    await self._offer(claim)
                case RefuseUnreadableOffer(job_id, reason):
                    self._dispatcher.refuse_unreadable(job_id, reason)
                case HeartbeatAcked():
                    self._status.heartbeat_ok()
                case Log(level, message, job_id):
                    self._crumbs(level, "ws", message, job_id)
                case Close():
                    self._close = action
                case End(end):
                    if self._end is None:
                        self._end = end
                    self._done.set()

    async def _send(self, text: str, what: str) -> bool:
        try:
            await self._ws.send(text)
        except (ConnectionClosed, OSError) as exc:
            await self._apply(self._machine.send_failed(what, str(exc)))
            return False
        return True

    async def _offer(self, claim: JobOfferClaim) -> None:
        # The reply leaves first; the offer's breadcrumbs are written right after it.
        reply, note = self._dispatcher.answer(claim)
        try:
            await self._ws.send(encode(reply))
        except (ConnectionClosed, OSError) as exc:
            note()
            if isinstance(reply, Accept):
                self._dispatcher.abandon(claim, str(exc))
            else:
                self._crumbs("warn", "ws", f"reject send failed for offer {claim.job_id}: {exc}")
            await self._apply(self._machine.send_failed(reply.type, str(exc)))
            return
        if isinstance(reply, Accept):
            await self._dispatcher.begin(claim, note)
        else:
            note()

    # ---- tasks --------------------------------------------------------------------

    async def _watch_stop(self, stop: asyncio.Event) -> None:
        await stop.wait()
        if self._machine.phase is Phase.CONNECTED:
            # Graceful: the running job finishes (or is failed retryable) and its frame
            # leaves on this session before the close 1000.
            await self._dispatcher.drain(self._timing.shutdown_grace_s)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(OUTBOX_FLUSH_S):
                    await self._outbox.wait_empty()
            # The last log lines leave too (an update's `restarting into it`): the log
            # pump sends only once a second.
            if batch := self._ship.drain(LOG_BATCH_MAX):
                with contextlib.suppress(ConnectionClosed, OSError):
                    await self._ws.send(encode(LogBatch(entries=batch)))
        await self._apply(self._machine.stop())

    async def _read(self) -> None:
        while not self._done.is_set():
            try:
                async with asyncio.timeout(self._timing.read_idle_s):
                    text = await self._ws.recv()
            except TimeoutError:
                self._silent = True
                await self._apply(self._machine.idle_timeout(self._timing.read_idle_s))
                return
            except ConnectionClosed as exc:
                code = exc.rcvd.code if exc.rcvd else None
                reason = exc.rcvd.reason if exc.rcvd else ""
                await self._apply(self._machine.closed(code, reason))
                return
            await self._apply(self._machine.text_received(text))
            self._outbox.contact()  # after: `welcome` first judges the silence before it

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        assert self._group is not None
        self._tasks.append(self._group.create_task(coro))

    def _start_pumps(self) -> None:
        self._spawn(self._heartbeats())
        self._spawn(self._ship_logs())
        self._spawn(self._pump_outbox())

    async def _heartbeats(self) -> None:
        paused = self._status.paused
        while True:
            now_paused = self._status.paused
            if now_paused != paused:
                paused = now_paused
                self._crumbs("info", "ws", _pause_line(paused))
            frame = Heartbeat(
                capabilities=self._capabilities(), current_job_id=self._status.current_job_id
            )
            try:
                await self._ws.send(encode(frame))
            except (ConnectionClosed, OSError) as exc:
                self._status.heartbeat_failed(str(exc))
                await self._apply(self._machine.send_failed("heartbeat", str(exc)))
                return
            await asyncio.sleep(self._timing.heartbeat_s)

    async def _ship_logs(self) -> None:
        while True:
            # A busy second's lines leave as several batches of at most LOG_BATCH_MAX,
            # with job frames let through in between: one huge batch would hold up
            # this loop and the studio's for tens of milliseconds.
            while batch := self._ship.drain(LOG_BATCH_MAX):
                try:
                    await self._ws.send(encode(LogBatch(entries=batch)))
                except (ConnectionClosed, OSError) as exc:
                    self._ship.requeue_front(batch)
                    await self._apply(self._machine.send_failed("logBatch", str(exc)))
                    return
                if len(batch) < LOG_BATCH_MAX:
                    break
                await asyncio.sleep(0)
            await asyncio.sleep(self._timing.log_flush_s)

    async def _pump_outbox(self) -> None:
        try:
            await self._outbox.pump(self._ws.send)
        except (ConnectionClosed, OSError) as exc:
            await self._apply(self._machine.send_failed("result", str(exc)))

    async def _close_socket(self) -> None:
        close = self._close or Close(1000, "session ended")
        wait = DEAD_LINK_CLOSE_S if self._silent else CLOSE_TIMEOUT_S
        with contextlib.suppress(Exception):
            async with asyncio.timeout(wait):
                await self._ws.close(close.code, close.reason)
        if self._silent:
            self._ws.transport.abort()  # no answer is coming: drop the socket now


def _pause_line(paused: bool) -> str:
    if paused:
        return "claiming paused by operator; new offers are rejected until resumed"
    return "claiming resumed by operator; accepting new offers again"
