"""Status-board snapshots for the desktop tests (the real `Snapshot` type)."""

from __future__ import annotations

from typing import Any

from studio_worker.protocol.outcomes import SessionState
from studio_worker.status.store import JobRecord, Snapshot


def job(job_id: str, outcome: str = "running", error: str | None = None) -> JobRecord:
    return JobRecord(
        job_id=job_id,
        kind="image",
        model="sd-tiny",
        engine="sd-cpp",
        prompt_preview="a cat",
        started_at="2026-01-01T00:00:00.000Z",
        outcome=outcome,
        error=error,
    )


def snap(**changes: Any) -> Snapshot:
    fields: dict[str, Any] = {
        "session_state": SessionState.CONNECTED,
        "session_attempt": 0,
        "session_reason": "",
        "registration": {"state": "approved"},
        "heartbeat": None,
        "paused": False,
        "current_job": None,
        "recent_jobs": (),
        "worker_id": "w1",
    }
    fields.update(changes)
    return Snapshot(**fields)
