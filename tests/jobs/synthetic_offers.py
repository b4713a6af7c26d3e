"""The synthetic engine's side of the dispatcher tests: an offer, and a running dispatcher."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx

from studio_worker.domain.tasks import JobOfferClaim
from studio_worker.engines.registry import EngineRegistry
from studio_worker.engines.synthetic import SyntheticEngine
from studio_worker.jobs.dispatcher import Dispatcher
from studio_worker.jobs.gate import JobGate
from studio_worker.jobs.journal import JobJournal
from studio_worker.protocol.ports import FrameSink
from studio_worker.results.uploader import ResultUploader
from studio_worker.status.shiplog import Breadcrumbs, ShipQueue
from studio_worker.status.store import StatusStore


def claim(job_id: str, task: dict[str, object]) -> JobOfferClaim:
    return JobOfferClaim.model_validate(
        {
            "jobId": job_id,
            "gameId": "g",
            "assetName": "a",
            "model": "synthetic",
            "vramGbEstimate": 0,
            "task": task,
            "modelSource": {"engine": "synthetic", "files": []},
        }
    )


@asynccontextmanager
async def running_dispatcher(
    sink: FrameSink, crumbs: Breadcrumbs | None = None, journal: JobJournal | None = None
) -> AsyncIterator[Dispatcher]:
    """A dispatcher over the synthetic engine, its `run` loop going; no studio link."""
    async with httpx.AsyncClient() as http:
        dispatcher = Dispatcher(
            gate=JobGate(),
            engines=EngineRegistry([SyntheticEngine()]),
            uploader=ResultUploader(http),
            sink=sink,
            status=StatusStore(),
            crumbs=crumbs or Breadcrumbs(ShipQueue()),
            link=lambda: None,
            journal=journal,
        )
        runner = asyncio.create_task(dispatcher.run())
        await asyncio.sleep(0)
        try:
            yield dispatcher
        finally:
            runner.cancel()
            await asyncio.gather(runner, return_exceptions=True)
