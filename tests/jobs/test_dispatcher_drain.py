"""Shutdown with a job running (`Dispatcher.drain`): finish within the grace, or fail it
retryable once; offers meanwhile are declined `busy`; every outcome is journaled first."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import httpx
import pytest

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import JobError, JobResult, JsonResult
from studio_worker.domain.tasks import JobOfferClaim
from studio_worker.domain.wire import WireModel
from studio_worker.engines.base import Progress
from studio_worker.engines.registry import EngineRegistry
from studio_worker.jobs.dispatcher import SHUTDOWN_ERROR, Dispatcher
from studio_worker.jobs.gate import JobGate
from studio_worker.jobs.journal import RESTARTED_ERROR, JobJournal
from studio_worker.protocol.frames import Accept, CompleteJson, Fail, Reject, RejectCode
from studio_worker.results.uploader import ResultUploader
from studio_worker.status.shiplog import Breadcrumbs, ShipQueue
from studio_worker.status.store import StatusStore


class Blocking:
    name = "llama"

    def __init__(self) -> None:
        self.release = threading.Event()
        self.cancelled = threading.Event()

    def models_per_kind(self) -> Mapping[TaskKind, list[str]]:
        return {TaskKind.LLM: ["blocking:*"]}

    def run(
        self,
        claim: JobOfferClaim,
        model_paths: Mapping[str, Path],
        progress: Progress,
        cancel: threading.Event,
    ) -> JobResult:
        while not self.release.wait(0.01):
            if cancel.is_set():
                self.cancelled.set()
                raise JobError("cancelled", retryable=True)
        return JsonResult({"ok": True})


class Sink:
    def __init__(self) -> None:
        self.frames: list[WireModel] = []

    def put(self, frame: WireModel) -> None:
        self.frames.append(frame)


def claim(job_id: str) -> JobOfferClaim:
    return JobOfferClaim.model_validate(
        {
            "jobId": job_id,
            "gameId": "g",
            "assetName": "a",
            "model": "m",
            "vramGbEstimate": 0,
            "task": {"kind": "llm", "messages": [{"role": "user", "content": "hi"}]},
            "modelSource": {"engine": "llama-cpp", "files": []},
        }
    )


Parts = tuple[Dispatcher, Blocking, Sink, JobJournal, StatusStore]


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    engine, sink, status = Blocking(), Sink(), StatusStore()
    journal = JobJournal(tmp_path / "jobs")
    async with httpx.AsyncClient() as http:
        dispatcher = Dispatcher(
            gate=JobGate(),
            engines=EngineRegistry([engine]),
            uploader=ResultUploader(http),
            sink=sink,
            status=status,
            crumbs=Breadcrumbs(ShipQueue()),
            link=lambda: None,
            journal=journal,
        )
        runner = asyncio.create_task(dispatcher.run())
        assert dispatcher.consider(claim("j1")) == Accept(job_id="j1")
        dispatcher.start(claim("j1"))
        yield dispatcher, engine, sink, journal, status
        engine.release.set()
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)


async def test_a_job_that_ends_within_the_grace_delivers_its_result(parts: Parts) -> None:
    dispatcher, engine, sink, _, _ = parts
    asyncio.get_running_loop().call_later(0.05, engine.release.set)
    await dispatcher.drain(10.0)
    assert [type(f) for f in sink.frames] == [CompleteJson]


async def test_a_job_that_outlives_the_grace_is_failed_retryable_once(
    parts: Parts, tmp_path: Path
) -> None:
    dispatcher, engine, sink, _, status = parts
    await dispatcher.drain(0.05)
    assert sink.frames == [Fail(job_id="j1", error=SHUTDOWN_ERROR, retryable=True)]
    await dispatcher.wait_idle()
    assert engine.cancelled.wait(5)  # the engine was asked to stop
    assert sink.frames == [Fail(job_id="j1", error=SHUTDOWN_ERROR, retryable=True)]  # once
    (record,) = status.snapshot().recent_jobs
    assert (record.outcome, record.error) == ("failed", SHUTDOWN_ERROR)
    # the fail is journaled until it is handed to the socket: a crash now still owes it
    assert JobJournal(tmp_path / "jobs").recover() == sink.frames


async def test_offers_during_the_drain_are_declined_busy(parts: Parts, tmp_path: Path) -> None:
    dispatcher, engine, _, _, _ = parts
    draining = asyncio.create_task(dispatcher.drain(10.0))
    await asyncio.sleep(0)
    reply = dispatcher.consider(claim("j2"))
    assert isinstance(reply, Reject) and reply.code is RejectCode.BUSY
    engine.release.set()
    await draining
    reply = dispatcher.consider(claim("j3"))  # idle now, but shutting down: still busy
    assert isinstance(reply, Reject) and reply.code is RejectCode.BUSY


async def test_an_accepted_job_is_journaled_running(parts: Parts, tmp_path: Path) -> None:
    assert JobJournal(tmp_path / "jobs").recover() == [
        Fail(job_id="j1", error=RESTARTED_ERROR, retryable=True)
    ]
