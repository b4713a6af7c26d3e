"""The status board's "why no jobs" list and the running job's elapsed time."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

from studio_worker.status.store import DECLINED_OFFERS_CAP, JobRecord, StatusStore

AT = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def test_declined_offers_are_listed_newest_first_and_capped() -> None:
    store = StatusStore()
    assert store.snapshot().to_json()["declinedOffers"] == []
    store.offer_declined("j1", "image", "m", "paused", "worker paused by operator", at=AT)
    store.offer_declined("j2", "llm", "q", "busy", "worker already has an in-flight job", at=AT)
    declined = store.snapshot().to_json()["declinedOffers"]
    assert declined == [
        {
            "jobId": "j2",
            "kind": "llm",
            "model": "q",
            "code": "busy",
            "reason": "worker already has an in-flight job",
            "at": "2025-03-01T12:00:00.000Z",
        },
        {
            "jobId": "j1",
            "kind": "image",
            "model": "m",
            "code": "paused",
            "reason": "worker paused by operator",
            "at": "2025-03-01T12:00:00.000Z",
        },
    ]
    for n in range(DECLINED_OFFERS_CAP + 5):
        store.offer_declined(f"x{n}", "image", "m", "busy", "busy")
    ids = [d["jobId"] for d in store.snapshot().to_json()["declinedOffers"]]
    assert len(ids) == DECLINED_OFFERS_CAP
    assert ids[0] == f"x{DECLINED_OFFERS_CAP + 4}"


def test_running_job_has_elapsed_ms_from_its_start() -> None:
    store = StatusStore()
    started = datetime.now(UTC) - timedelta(seconds=3)
    record = JobRecord(
        job_id="j",
        kind="image",
        model="m",
        engine="synthetic",
        prompt_preview="",
        started_at=started.isoformat().replace("+00:00", "Z"),
    )
    store.job_started(record)
    elapsed = store.snapshot().to_json()["currentJob"]["elapsedMs"]
    assert elapsed >= 3000
    store.job_finished("j", "completed", 1234, None)
    snap = store.snapshot().to_json()
    assert snap["currentJob"] is None
    assert snap["recentJobs"][0]["elapsedMs"] == 1234


def test_unreadable_start_time_leaves_elapsed_unset() -> None:
    store = StatusStore()
    store.job_started(
        replace(
            JobRecord("j", "image", "m", "synthetic", "", "not a time"),
        )
    )
    assert store.snapshot().to_json()["currentJob"]["elapsedMs"] is None
