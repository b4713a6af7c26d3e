"""Dispatcher delivery of a binary result through a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import os
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from studio_worker.domain.results import BinaryResult
from studio_worker.domain.tasks import JobOfferClaim
from studio_worker.domain.wire import WireModel
from studio_worker.engines.registry import EngineRegistry
from studio_worker.engines.synthetic import SyntheticEngine
from studio_worker.jobs.dispatcher import Dispatcher
from studio_worker.jobs.gate import JobGate
from studio_worker.jobs.journal import JobJournal
from studio_worker.protocol.frames import Accept, Fail
from studio_worker.protocol.urls import StudioLink
from studio_worker.results.uploader import ResultUploader
from studio_worker.status.shiplog import Breadcrumbs, ShipQueue
from studio_worker.status.store import StatusStore


class Sink:
    def __init__(self) -> None:
        self.frames: list[WireModel] = []

    def put(self, frame: WireModel) -> None:
        self.frames.append(frame)


@pytest.fixture
async def upload_server() -> AsyncIterator[tuple[str, list[int], list[int]]]:
    statuses: list[int] = []
    seen: list[int] = []

    async def complete(request: web.Request) -> web.Response:
        await request.read()
        status = statuses.pop(0) if statuses else 200
        seen.append(status)
        return web.Response(status=status, text="boom" if status >= 400 else "{}")

    app = web.Application()
    app.router.add_post("/graphics/api/workers/{w}/jobs/{j}/complete", complete)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    yield f"http://127.0.0.1:{port}", statuses, seen
    await runner.cleanup()


async def deliver_one(url: str) -> tuple[Sink, StatusStore, ShipQueue]:
    sink, status, ship = Sink(), StatusStore(), ShipQueue()

    async def no_sleep(_: float) -> None:
        return None

    async with httpx.AsyncClient() as http:
        dispatcher = Dispatcher(
            gate=JobGate(),
            engines=EngineRegistry([SyntheticEngine()]),
            uploader=ResultUploader(http, sleep=no_sleep),
            sink=sink,
            status=status,
            crumbs=Breadcrumbs(ship),
            link=lambda: StudioLink(url, "w1", "tok"),
        )
        claim = JobOfferClaim.model_validate(
            {
                "jobId": "j1",
                "gameId": "g",
                "assetName": "a",
                "model": "m",
                "vramGbEstimate": 0,
                "task": {"kind": "audio_tts", "text": "hi"},
                "modelSource": {"engine": "synthetic"},
            }
        )
        assert dispatcher.consider(claim) == Accept(job_id="j1")
        runner = asyncio.create_task(dispatcher.run())
        dispatcher.start(claim)
        await asyncio.sleep(0)
        async with asyncio.timeout(10):
            await dispatcher.wait_idle()
        runner.cancel()
    return sink, status, ship


async def test_two_5xx_then_ok_completes(upload_server: Any) -> None:
    url, statuses, seen = upload_server
    statuses.extend([500, 502])
    sink, status, ship = await deliver_one(url)
    assert seen == [500, 502, 200]
    assert sink.frames == []  # bytes went by HTTP: no WS frame on success
    assert status.snapshot().recent_jobs[0].outcome == "completed"
    assert "binary upload ok" in [e.message for e in ship.drain()]


async def test_three_5xx_fail_retryable(upload_server: Any) -> None:
    url, statuses, seen = upload_server
    statuses.extend([500, 500, 500])
    sink, status, _ = await deliver_one(url)
    assert seen == [500, 500, 500]
    assert sink.frames == [
        Fail(job_id="j1", retryable=True, error="complete failed: 500 Internal Server Error — boom")
    ]
    record = status.snapshot().recent_jobs[0]
    assert record.outcome == "failed" and not status.snapshot().current_job


async def test_409_sends_no_fail_for_a_job_the_studio_does_not_hold(upload_server: Any) -> None:
    url, statuses, seen = upload_server
    statuses.append(409)
    sink, status, ship = await deliver_one(url)
    assert seen == [409]  # not retried
    assert sink.frames == []  # a fail here would be a protocol violation (4002)
    (record,) = status.snapshot().recent_jobs
    assert record.outcome == "failed" and record.error is not None and "409" in record.error
    assert any("job no longer ours" in e.message for e in ship.drain())


@pytest.mark.parametrize(
    ("answers", "frames"),
    [
        ([200], []),  # delivered from the kept bytes
        ([409], []),  # it had landed before the stop (or was taken back): nothing sent
        ([500, 500, 500], ["fail"]),  # the studio holds it but will not take it: retryable
    ],
)
async def test_an_upload_cut_by_a_crash_is_made_again_at_the_next_welcome(
    upload_server: Any, tmp_path: Path, answers: list[int], frames: list[str]
) -> None:
    url, statuses, seen = upload_server
    statuses.extend(answers)
    JobJournal(tmp_path).uploading("j1", "hi", BinaryResult(b"RIFF....WAVE", "wav"))
    journal = JobJournal(tmp_path)  # the next process
    sink, status = Sink(), StatusStore()

    async def no_sleep(_: float) -> None:
        return None

    async with httpx.AsyncClient() as http:
        dispatcher = Dispatcher(
            gate=JobGate(),
            engines=EngineRegistry([SyntheticEngine()]),
            uploader=ResultUploader(http, sleep=no_sleep),
            sink=sink,
            status=status,
            crumbs=Breadcrumbs(ShipQueue()),
            link=lambda: StudioLink(url, "w1", "tok"),
            journal=journal,
        )
        runner = asyncio.create_task(dispatcher.run())
        await asyncio.sleep(0)
        assert journal.recover() == []  # what `Outbox.welcomed` does first
        dispatcher.welcomed()
        async with asyncio.timeout(10):
            # done: a fail in the sink, or (delivered or not ours) the journal cleared
            while not (sink.frames if frames else not os.listdir(tmp_path)):
                await asyncio.sleep(0.01)
        runner.cancel()
        await asyncio.gather(runner, return_exceptions=True)
    assert seen == answers
    assert [f.type for f in sink.frames] == frames  # type: ignore[attr-defined]
    if frames:
        assert sink.frames[0] == Fail(
            job_id="j1", error="complete failed: 500 Internal Server Error — boom", retryable=True
        )
