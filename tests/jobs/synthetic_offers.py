"""An offer for the synthetic engine, as the dispatcher tests build them."""

from __future__ import annotations

from studio_worker.domain.tasks import JobOfferClaim


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
