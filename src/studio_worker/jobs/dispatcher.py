"""The dispatcher (protocol §3.7-§3.8): offer -> accept/reject -> engine -> delivery.

The session asks `consider()` for the answer to an offer and sends it; an accepted claim
is then `start()`ed and runs in the dispatcher's own task group, so a reconnect never
kills a running job. Results leave through the FrameSink (JSON) or the uploader (bytes).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Protocol

from studio_worker.domain.logs import LogLevel, rfc3339_millis
from studio_worker.domain.results import (
    BINARY_KINDS,
    BinaryResult,
    JobError,
    JobResult,
    JsonResult,
)
from studio_worker.domain.tasks import JobOfferClaim, ModelSource, full_prompt, prompt_preview
from studio_worker.engines.registry import EngineRegistry
from studio_worker.jobs.admission import BUSY, Admit, admit
from studio_worker.jobs.gate import JobGate
from studio_worker.jobs.journal import HeldUpload, JobJournal
from studio_worker.protocol.frames import Accept, CompleteJson, Fail, Reject
from studio_worker.protocol.ports import FrameSink
from studio_worker.protocol.urls import StudioLink
from studio_worker.results.uploader import NotHeld, ResultUploader
from studio_worker.status.shiplog import Breadcrumbs
from studio_worker.status.store import JobRecord, StatusStore

log = logging.getLogger(__name__)

RunBlocking = Callable[..., Awaitable[Any]]


class ModelFiles(Protocol):
    """Where the files of a model source come from (the model store)."""

    async def ensure(self, model: str, source: ModelSource) -> dict[str, Path]: ...


# Engines that make their output from nothing: their model sources are never fetched.
NO_FILES_ENGINES = frozenset({"synthetic"})
SHUTDOWN_ERROR = "worker shut down before the job finished"


class Dispatcher:
    def __init__(
        self,
        *,
        gate: JobGate,
        engines: EngineRegistry,
        uploader: ResultUploader,
        sink: FrameSink,
        status: StatusStore,
        crumbs: Breadcrumbs,
        link: Callable[[], StudioLink | None],
        only_when_idle: Callable[[], bool] = lambda: False,
        presence: Callable[[], str | None] = lambda: None,
        run_blocking: RunBlocking = asyncio.to_thread,
        models: ModelFiles | None = None,
        journal: JobJournal | None = None,
    ) -> None:
        self._gate = gate
        self._engines = engines
        self._uploader = uploader
        self._sink = sink
        self._status = status
        self._crumbs = crumbs
        self._link = link
        self._only_when_idle = only_when_idle
        self._presence = presence
        self._run_blocking = run_blocking
        self._models = models
        self._journal = journal
        self._engine_tasks: dict[str, asyncio.Task[None]] = {}  # jobs not yet settled
        self._closing = False  # shutting down: every offer is declined busy
        self._group: asyncio.TaskGroup | None = None
        self._queue: asyncio.Queue[JobOfferClaim] = asyncio.Queue()
        self._cancel = threading.Event()
        self._idle = asyncio.Event()
        self._idle.set()
        # the inline job running in `begin`, and its breadcrumbs held back until it is done
        self._later_job: str | None = None
        self._later: list[Callable[[], None]] = []

    # ---- offer handling (called by the session, never blocks) --------------------

    def consider(self, claim: JobOfferClaim) -> Accept | Reject:
        """Decide an offer; on accept the gate is reserved for this job."""
        reply, note = self.answer(claim)
        note()
        return reply

    def answer(self, claim: JobOfferClaim) -> tuple[Accept | Reject, Callable[[], None]]:
        """`consider`, with its breadcrumbs handed back to leave once the reply is sent."""
        verdict = admit(
            paused=self._status.paused,
            only_when_idle=self._only_when_idle(),
            presence=self._presence(),
            busy=self._gate.busy or self._closing,
        )
        if isinstance(verdict, Admit):
            if self._gate.try_reserve(claim.job_id):
                return Accept(job_id=claim.job_id), lambda: self._note_offer(claim, None)
            verdict = BUSY  # another competitor took the gate since the check
        reply = Reject(job_id=claim.job_id, reason=verdict.reason, code=verdict.code)
        self._status.offer_declined(
            claim.job_id, claim.task.kind.value, claim.model, verdict.code.value, verdict.reason
        )
        return reply, lambda: self._note_offer(claim, verdict.log)

    def _note_offer(self, claim: JobOfferClaim, refused: str | None) -> None:
        self._say(
            "info",
            "ws",
            f"offer received {claim.job_id} game={claim.game_id} asset={claim.asset_name} "
            f"model={claim.model} vram={claim.vram_gb_estimate:g}",
            claim.job_id,
        )
        if refused is not None:
            self._say("info", "ws", f"rejecting offer {claim.job_id}: {refused}", claim.job_id)

    def abandon(self, claim: JobOfferClaim, error: str) -> None:
        """The `accept` could not be sent: free the gate, send nothing else."""
        self._say("warn", "ws", f"accept send failed for offer {claim.job_id}: {error}")
        self._gate.release(claim.job_id)

    async def begin(self, claim: JobOfferClaim, note: Callable[[], None]) -> None:
        """Run an accepted job (its `accept` has left); `note` writes the offer's breadcrumbs.

        An inline job runs right here, on the caller's task: a task of its own would cost
        a trip round the event loop, and so would its breadcrumbs, which are written once
        its result is on its way (the offer's first: the order of the lines is kept). Any
        other job gets its task and the offer's breadcrumbs at once.
        """
        if not self._inline(claim):
            note()
            self.start(claim)
            return
        self._idle.clear()
        self._later_job, self._later = claim.job_id, [note]
        try:
            await self._run_job(claim)
        finally:
            later, self._later_job, self._later = self._later, None, []
            for write in later:
                write()

    def _say(self, level: LogLevel, category: str, message: str, job_id: str | None = None) -> None:
        """A breadcrumb; held back while the inline job it is about runs (`begin`)."""
        if job_id is not None and job_id == self._later_job:
            self._later.append(lambda: self._crumbs(level, category, message, job_id))
        else:
            self._crumbs(level, category, message, job_id)

    def start(self, claim: JobOfferClaim) -> None:
        # A job that runs longer than a moment is journaled, so a crash mid-job is reported
        # at the next welcome. An inline job answers in microseconds on this loop: its
        # outcome is in the outbox before a crash could fall between, and a frame the
        # outbox cannot send is journaled then (`Outbox` -> `JobJournal.unsent`).
        if self._journal is not None and not self._inline(claim):
            self._journal.running(claim.job_id)
        self._idle.clear()
        if self._group is not None:  # running: the job's task starts at the next tick
            with contextlib.suppress(RuntimeError):  # unless the group is shutting down
                self._launch(self._group, claim)
                return
        self._queue.put_nowait(claim)  # `run` starts it

    async def wait_idle(self) -> None:
        """Return once no accepted job is waiting or running."""
        await self._idle.wait()

    async def drain(self, grace_s: float) -> None:
        """Shutdown: decline new offers; give running jobs `grace_s`, then fail them
        retryable (their engines are asked to stop) so the studio need not wait."""
        self._closing = True
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(grace_s):
                await self._idle.wait()
        if not self._engine_tasks:
            return
        self._cancel.set()
        for job_id, task in list(self._engine_tasks.items()):
            task.cancel()
            self._fail(job_id, SHUTDOWN_ERROR, True, "dispatch failed")

    def welcomed(self) -> None:
        """A session is up: upload again what a past run was uploading when it stopped
        (after the outbox took the journal's frames, `Outbox.welcomed`)."""
        if self._journal is None or self._group is None:
            return
        for upload in self._journal.take_uploads():
            self._group.create_task(self._reupload(upload), name=f"reupload-{upload.job_id}")

    async def _reupload(self, upload: HeldUpload) -> None:
        job_id = upload.job_id
        link = self._link()
        if link is None or self._journal is None:
            return
        try:
            await self._uploader.upload(link, job_id, upload.prompt, upload.result)
        except NotHeld as exc:  # it landed before the stop, or the studio took the job back
            self._say("warn", "ws", f"kept result not taken: {exc.message}", job_id)
            self._journal.done(job_id)
        except JobError as exc:
            self._fail(job_id, exc.message, True, "dispatch failed")
        else:
            self._journal.done(job_id)
            self._say("info", "ws", "binary upload ok (kept from before the restart)", job_id)

    def refuse_unreadable(self, job_id: str, reason: str) -> None:
        """An offer we cannot read: accept it and fail it terminally, so it never loops."""
        self._say("error", "ws", f"dispatch failed: unreadable offer: {reason}", job_id)
        self._sink.put(Accept(job_id=job_id))
        self._put(Fail(job_id=job_id, error=f"unreadable offer: {reason}", retryable=False))

    # ---- running ------------------------------------------------------------------

    async def run(self) -> None:
        """Run accepted jobs until cancelled; each job is its own task."""
        try:
            async with asyncio.TaskGroup() as group:
                self._group = group
                while True:
                    self._launch(group, await self._queue.get())
        finally:
            self._group = None
            self._cancel.set()

    def _launch(self, group: asyncio.TaskGroup, claim: JobOfferClaim) -> None:
        task = group.create_task(self._run_job(claim), name=f"job-{claim.job_id}")
        self._engine_tasks[claim.job_id] = task

    async def _run_job(self, claim: JobOfferClaim) -> None:
        job_id = claim.job_id
        started = time.monotonic()
        prompt = full_prompt(claim.task)
        self._status.job_started(
            JobRecord(
                job_id=job_id,
                kind=claim.task.kind.value,
                model=claim.model,
                engine=claim.model_source.engine,
                prompt_preview=prompt_preview(prompt),
                started_at=_iso_now(),
            )
        )
        log.debug("job started", extra={"op": "job", "job_id": job_id})
        outcome, error = "failed", None
        try:
            result = await self._execute(claim)
            self._engine_tasks.pop(job_id, None)  # settled: a shutdown now lets it deliver
            self._gate.release(job_id)  # the GPU is free; the studio waits for delivery
            dispatched = f"{claim.task.kind.value} dispatched in {_ms(started)}ms"
            await self._deliver(claim, prompt, result, dispatched)
            outcome = "completed"
        except NotHeld as exc:  # nothing to tell the studio about a job it does not hold
            error = exc.message
            self._say("warn", "ws", f"result not taken, job no longer ours: {error}", job_id)
            if self._journal is not None:
                self._journal.done(job_id)
        except JobError as exc:
            error = exc.message
            self._fail(job_id, exc.message, exc.retryable, "dispatch failed")
        except asyncio.CancelledError:  # only a shutdown cancels a job
            error = SHUTDOWN_ERROR
            raise
        except Exception as exc:  # an engine crash fails the job, never the worker
            error = f"{type(exc).__name__}: {exc}"
            log.exception("engine crashed", extra={"job_id": job_id})
            self._fail(job_id, error, True, "dispatch task panic")
        finally:
            self._engine_tasks.pop(job_id, None)
            self._gate.release(job_id)
            self._status.job_finished(job_id, outcome, _ms(started), error)
            if self._queue.empty():
                self._idle.set()
            # Debug: the breadcrumbs already tell each job's story at info, once.
            log.debug("job finished", extra={"op": "job", "job_id": job_id, "outcome": outcome})

    def _inline(self, claim: JobOfferClaim) -> bool:
        try:
            engine = self._engines.resolve(claim.model_source.engine, claim.model)
        except JobError:
            return False
        return claim.task.kind in getattr(engine, "inline_kinds", ())

    async def _execute(self, claim: JobOfferClaim) -> JobResult:
        engine = self._engines.resolve(claim.model_source.engine, claim.model)
        model_paths = await self._model_files(claim)

        def progress(fraction: float, note: str) -> None:  # from the engine's thread, mostly
            self._status.job_progress(claim.job_id, fraction, note)

        result: JobResult
        if claim.task.kind in getattr(engine, "inline_kinds", ()):
            # The engine answers this kind in microseconds: a thread hop would cost more
            # than the call, so it runs right here on the event loop.
            result = engine.run(claim, model_paths, progress, self._cancel)
        else:
            result = await self._run_blocking(
                engine.run, claim, model_paths, progress, self._cancel
            )
        return result

    async def _model_files(self, claim: JobOfferClaim) -> dict[str, Path]:
        source = claim.model_source
        if not source.files or source.engine in NO_FILES_ENGINES:
            return {}
        if self._models is None:
            raise JobError("this worker has no model store to fetch model files into")
        started = time.monotonic()
        paths = await self._models.ensure(claim.model, source)
        self._say(
            "info",
            "ws",
            f"model {claim.model}: {len(paths)} file(s) ready in {_ms(started)}ms",
            claim.job_id,
        )
        return paths

    async def _deliver(
        self, claim: JobOfferClaim, prompt: str, result: JobResult, dispatched: str
    ) -> None:
        """Deliver the result; `dispatched` is the breadcrumb that goes before delivery's."""
        kind, job_id = claim.task.kind, claim.job_id
        binary_expected = kind in BINARY_KINDS
        if isinstance(result, JsonResult) and not binary_expected:
            self._put(CompleteJson(job_id=job_id, result=result.value, prompt=prompt))
            # Let the session's outbox pump put the frame on the wire before the
            # breadcrumbs and the bookkeeping: the studio is waiting for the result.
            await asyncio.sleep(0)
            self._say("info", "ws", dispatched, job_id)
            self._say("info", "ws", "json result sent", job_id)
            return
        self._say("info", "ws", dispatched, job_id)
        if isinstance(result, BinaryResult) and binary_expected:
            link = self._link()
            if link is None:
                raise JobError("worker lost its studio credentials before the upload")
            if self._journal is not None:  # up to 32 MiB kept on disk: not on the loop
                await asyncio.to_thread(self._journal.uploading, job_id, prompt, result)
            await self._uploader.upload(link, job_id, prompt, result)
            if self._journal is not None:
                self._journal.done(job_id)
            self._say("info", "ws", "binary upload ok", job_id)
        else:
            raise JobError(
                f"engine returned {type(result).__name__} for a {kind.value} task",
                retryable=False,
            )

    def _fail(self, job_id: str, error: str, retryable: bool, prefix: str) -> None:
        self._say("error", "ws", f"{prefix}: {error}", job_id)
        self._put(Fail(job_id=job_id, error=error, retryable=retryable))

    def _put(self, frame: CompleteJson | Fail) -> None:
        """An outcome for the studio: journaled first, so a crash cannot lose it."""
        if self._journal is not None and self._journal.tracks(frame.job_id):
            self._journal.held(frame)
        self._sink.put(frame)


def _ms(since: float) -> int:
    return int((time.monotonic() - since) * 1000)


def _iso_now() -> str:
    return rfc3339_millis(datetime.now(UTC))
