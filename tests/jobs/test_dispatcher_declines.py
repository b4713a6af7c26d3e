"""Rejected offers land on the status board's "why no jobs" list; accepted ones do not."""

from __future__ import annotations

import httpx

from studio_worker.domain.tasks import JobOfferClaim
from studio_worker.engines.registry import EngineRegistry
from studio_worker.engines.synthetic import SyntheticEngine
from studio_worker.jobs.dispatcher import Dispatcher
from studio_worker.jobs.gate import JobGate
from studio_worker.protocol.frames import Accept, Reject, RejectCode
from studio_worker.results.uploader import ResultUploader
from studio_worker.status.shiplog import Breadcrumbs, ShipQueue
from studio_worker.status.store import StatusStore


def claim(job_id: str) -> JobOfferClaim:
    return JobOfferClaim.model_validate(
        {
            "jobId": job_id,
            "gameId": "g",
            "assetName": "a",
            "model": "m",
            "vramGbEstimate": 0,
            "task": {"kind": "audio_tts", "text": "hi"},
            "modelSource": {"engine": "synthetic"},
        }
    )


async def test_paused_and_busy_rejections_are_recorded() -> None:
    status, gate = StatusStore(), JobGate()
    async with httpx.AsyncClient() as http:
        dispatcher = Dispatcher(
            gate=gate,
            engines=EngineRegistry([SyntheticEngine()]),
            uploader=ResultUploader(http),
            sink=type("Sink", (), {"put": lambda self, frame: None})(),
            status=status,
            crumbs=Breadcrumbs(ShipQueue()),
            link=lambda: None,
        )
        status.set_paused(True)
        paused = dispatcher.consider(claim("p1"))
        assert isinstance(paused, Reject) and paused.code is RejectCode.PAUSED
        status.set_paused(False)
        assert dispatcher.consider(claim("a1")) == Accept(job_id="a1")
        busy = dispatcher.consider(claim("b1"))
        assert isinstance(busy, Reject) and busy.code is RejectCode.BUSY
    declined = status.snapshot().to_json()["declinedOffers"]
    assert [(d["jobId"], d["code"], d["reason"]) for d in declined] == [
        ("b1", "busy", busy.reason),
        ("p1", "paused", paused.reason),
    ]
    assert declined[0]["kind"] == "audio_tts" and declined[0]["model"] == "m"
