"""Live worker sessions and the offer pipeline (protocol §3.3-§3.7, §4.1 matching).

The hub owns who is connected, decides which idle worker gets which queued job, and
applies the job frames a worker sends. Sockets are reached only through `Session`.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import sqlite3
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from aiohttp import web

from studio_worker.domain.capabilities import WorkerCapabilities
from studio_worker.domain.wire import WireModel
from studio_worker.protocol.frames import (
    Accept,
    CompleteAck,
    CompleteJson,
    ErrorFrame,
    Fail,
    FailAck,
    Heartbeat,
    HeartbeatAck,
    Hello,
    LogBatch,
    ReadyForMore,
    Reject,
    WorkerErrorCode,
    WorkerFrame,
    encode,
)
from studio_worker.studio.jobbook import JobBook
from studio_worker.studio.records import JobRecord, JobStatus
from studio_worker.studio.store import QueuedJob, Store

log = logging.getLogger(__name__)

PUMP_PAGE = 8

_order = itertools.count()

# Close codes of protocol §3.5.
CLOSE_AUTH_FAILED = 4001
CLOSE_PROTOCOL_VIOLATION = 4002
CLOSE_DUPLICATE_WORKER = 4003
CLOSE_WORKER_DELETED = 4004
CLOSE_GOING_AWAY = 1001


class ProtocolViolation(Exception):
    """A frame the session must answer with `error protocol_violation` + close 4002."""


@dataclass(eq=False)
class Session:
    worker_id: str
    ws: web.WebSocketResponse
    clock: Callable[[], float] = time.monotonic
    order: int = field(default_factory=lambda: next(_order))
    welcomed: bool = False
    capabilities: WorkerCapabilities | None = None
    last_heartbeat: float = 0.0
    # Set after a reject: no re-offer to this worker until its next heartbeat.
    hold_offers: bool = False
    # When heartbeats first stopped naming a job this worker holds from an older session.
    missing_since: float | None = None

    def __post_init__(self) -> None:
        self.last_heartbeat = self.clock()

    async def send(self, frame: WireModel) -> bool:
        return await self.send_text(encode(frame))

    async def send_text(self, text: str) -> bool:
        if self.ws.closed:
            return False
        try:
            await self.ws.send_str(text)
        except (ConnectionError, RuntimeError) as exc:
            log.info("send to %s failed: %s", self.worker_id, exc)
            return False
        return True

    async def close(self, code: int, message: str, error: WorkerErrorCode | None = None) -> None:
        """Close with `code`; an `error` frame goes first when `error` is given (§3.5)."""
        if error is not None:
            await self.send(ErrorFrame(code=error, message=message))
        if not self.ws.closed:
            await self.ws.close(code=code, message=message.encode("utf-8")[:120])


class Hub:
    def __init__(
        self,
        store: Store,
        jobs: JobBook,
        *,
        stale_after: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._store = store
        self._jobs = jobs
        self.stale_after = stale_after
        self._clock = clock
        self._sessions: dict[str, Session] = {}
        # Last sign of life of workers that are not connected (for the stale sweep).
        self._gone_since: dict[str, float] = {}
        self._wake = asyncio.Event()
        self._saving_holders = False

    # ---- sessions -----------------------------------------------------------------

    def session(self, worker_id: str) -> Session | None:
        return self._sessions.get(worker_id)

    def connected(self) -> dict[str, Session]:
        return dict(self._sessions)

    def attach(self, session: Session) -> Session | None:
        """Make `session` the worker's live one; returns the one it replaces, if any."""
        old = self._sessions.get(session.worker_id)
        self._sessions[session.worker_id] = session
        self._gone_since.pop(session.worker_id, None)
        return old

    def expect_back(self, worker_id: str) -> None:
        """A worker held a job when the studio stopped: as if it had just disconnected."""
        if worker_id not in self._sessions:
            self._gone_since.setdefault(worker_id, self._clock())

    def welcomed(self, session: Session) -> None:
        session.welcomed = True
        self.wake()

    def detach(self, session: Session) -> None:
        if self._sessions.get(session.worker_id) is not session:
            return
        del self._sessions[session.worker_id]
        self._gone_since[session.worker_id] = self._clock()
        # An offer not yet accepted goes back at once; a running job stays claimed so a
        # reconnect can still deliver it (the stale sweep reclaims it otherwise).
        job = self._jobs.held_by(session.worker_id)
        if job is not None and job.status is JobStatus.OFFERED:
            self._jobs.requeue(job.id, spend=False)
        self.wake()

    async def kick(
        self, worker_id: str, code: int, message: str, error: WorkerErrorCode | None
    ) -> None:
        """Operator action (revoke/delete): close the socket and release its job."""
        session = self._sessions.get(worker_id)
        job = self._jobs.held_by(worker_id)
        if job is not None:
            self._jobs.requeue(job.id, spend=False, error=f"worker {worker_id} removed")
        if session is not None:
            await session.close(code, message, error)
        self.wake()

    # ---- offers -------------------------------------------------------------------

    def wake(self) -> None:
        self._wake.set()

    async def run_dispatcher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            try:
                await self.pump()
            except Exception:
                log.exception("offer pump failed")

    async def pump(self) -> None:
        """Offer every queued job that has an eligible idle worker (§4.1 matching)."""
        busy = self._jobs.busy_workers()
        after = 0
        # Read the queue in pages, and only while some worker could take a job: the
        # cost of a pump stays flat however long the queue grows.
        while self._has_idle(busy):
            page = self._store.queued_page(after, PUMP_PAGE)
            if not page:
                return
            for job in page:
                after = job.rowid
                session = self._pick(job, busy)
                if session is None:
                    continue
                busy.add(session.worker_id)
                await self._offer(session, job.id)

    async def _offer(self, session: Session, job_id: str) -> None:
        job = self._jobs.offer(job_id, session.worker_id)
        log.info("offering %s to %s", job_id, session.worker_id)
        if not await session.send_text(offer_text(job)):
            current = self._jobs.holds(session.worker_id, job_id)
            if current is not None and current.status is JobStatus.OFFERED:
                self._jobs.requeue(job_id, spend=False)

    def _has_idle(self, busy: set[str]) -> bool:
        return any(
            s.welcomed and not s.hold_offers and s.worker_id not in busy
            for s in self._sessions.values()
        )

    def _pick(self, job: QueuedJob, busy: set[str]) -> Session | None:
        candidates = [
            s
            for s in self._sessions.values()
            if s.welcomed and not s.hold_offers and s.worker_id not in busy and _fits(s, job)
        ]
        return min(candidates, key=lambda s: s.order, default=None)

    # ---- frames -------------------------------------------------------------------

    async def on_frame(self, session: Session, frame: WorkerFrame) -> None:
        match frame:
            case Heartbeat():
                await self._heartbeat(session, frame)
            case Accept():
                self._accept(session, frame)
            case Reject():
                self._reject(session, frame)
            case CompleteJson():
                self._held(session, frame.job_id)
                self._jobs.complete_json(frame.job_id, frame.result, frame.prompt)
                await session.send(CompleteAck(job_id=frame.job_id))
                self.wake()
            case Fail():
                self._held(session, frame.job_id)
                self._jobs.fail(frame.job_id, frame.error, retryable=frame.retryable)
                await session.send(FailAck(job_id=frame.job_id))
                self.wake()
            case LogBatch():
                self._store.add_logs(session.worker_id, frame.entries)
            case Hello():
                raise ProtocolViolation("hello sent twice on one session")
            case ReadyForMore():
                self.wake()

    async def _heartbeat(self, session: Session, frame: Heartbeat) -> None:
        session.capabilities = frame.capabilities
        session.last_heartbeat = self._clock()
        session.hold_offers = False
        self._store.touch_worker(session.worker_id, frame.capabilities.to_wire())
        self._note_current_job(session, frame.current_job_id)
        await session.send(HeartbeatAck())
        self.wake()  # self-heal: an idle worker gets a waiting job

    def _note_current_job(self, session: Session, current: str | None) -> None:
        job = self._jobs.held_by(session.worker_id)
        if job is None or job.status is not JobStatus.RUNNING or current == job.id:
            session.missing_since = None
        elif session.missing_since is None:
            session.missing_since = self._clock()

    def _accept(self, session: Session, frame: Accept) -> None:
        job = self._held(session, frame.job_id)
        if job.status is JobStatus.OFFERED:
            # The accepting worker is written on the next tick (before anyone woken by
            # the job's start runs): off this frame's path, once for all accepts read.
            if not self._saving_holders:
                self._saving_holders = True
                asyncio.get_running_loop().call_soon(self._save_holders)
            self._jobs.start(job.id)

    def _save_holders(self) -> None:
        self._saving_holders = False
        try:
            self._store.save_holders()
        except sqlite3.Error:  # a full disk: the job still runs; a restart would requeue it
            log.exception("could not record which worker runs its job")

    def _reject(self, session: Session, frame: Reject) -> None:
        session.hold_offers = True
        job = self._jobs.holds(session.worker_id, frame.job_id)
        if job is None:
            log.info("%s rejected %s, which it does not hold", session.worker_id, frame.job_id)
            return
        transient = frame.code is not None
        self._jobs.requeue(job.id, spend=not transient, error=None if transient else frame.reason)
        self.wake()

    def _held(self, session: Session, job_id: str) -> JobRecord:
        job = self._jobs.holds(session.worker_id, job_id)
        if job is None:
            raise ProtocolViolation(f"job {job_id} is not held by this worker")
        return job

    # ---- stale sweep --------------------------------------------------------------

    async def sweep(self) -> None:
        """Close silent sessions and reclaim jobs of workers that went away (§3.6)."""
        now = self._clock()
        for session in list(self._sessions.values()):
            if now - session.last_heartbeat > self.stale_after:
                log.info("closing stale session of %s", session.worker_id)
                self.detach(session)
                self._reclaim(session.worker_id, "worker stopped heartbeating")
                await session.close(CLOSE_GOING_AWAY, "heartbeat timeout")
            elif (
                session.missing_since is not None and now - session.missing_since > self.stale_after
            ):
                session.missing_since = None
                self._reclaim(session.worker_id, "worker no longer reports the job")
        for worker_id, since in list(self._gone_since.items()):
            if now - since > self.stale_after:
                del self._gone_since[worker_id]
                self._reclaim(worker_id, "worker disconnected")

    def _reclaim(self, worker_id: str, why: str) -> None:
        job = self._jobs.held_by(worker_id)
        if job is not None:
            self._jobs.requeue(job.id, spend=True, error=why)
            self.wake()

    async def close_all(self) -> None:
        sessions = list(self._sessions.values())
        await asyncio.gather(
            *(s.close(CLOSE_GOING_AWAY, "studio shutting down") for s in sessions),
            return_exceptions=True,
        )


def offer_text(job: JobRecord) -> str:
    """The `offer` frame for a job, as `encode(Offer(claim=job.claim()))` writes it.

    Built straight from the stored wire forms: the task and model source were validated
    and stored canonical (`to_wire()`) at submission, so re-validating them into a
    `JobOfferClaim` on every offer only to dump them again changes nothing.
    """
    claim = {
        "jobId": job.id,
        "gameId": job.game_id,
        "assetName": job.asset_name,
        "model": job.model,
        "vramGbEstimate": float(job.vram_gb_estimate),
        "task": job.task,
        "modelSource": job.model_source,
    }
    return json.dumps({"type": "offer", "claim": claim}, separators=(",", ":"), ensure_ascii=False)


def _fits(session: Session, job: QueuedJob | JobRecord) -> bool:
    caps = session.capabilities
    if caps is None or not caps.auto_enabled:
        return False
    if job.kind not in caps.task_kinds:
        return False
    if caps.vram_threshold_gb < job.vram_gb_estimate:
        return False
    return not (caps.only_when_idle and caps.user_presence != "idle")
