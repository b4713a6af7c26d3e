"""The SQLite store on its own: transitions, log cap, tokens (no server)."""

from __future__ import annotations

from pathlib import Path

import pytest

from studio_worker.domain.logs import LogEntry
from studio_worker.studio.records import JobStatus
from studio_worker.studio.store import Store, TransitionError


def _job(store: Store) -> str:
    return store.add_job(
        kind="llm",
        model="m",
        task={"kind": "llm", "messages": []},
        model_source={"engine": "synthetic"},
        vram_gb_estimate=0,
        game_id="g",
        asset_name="a",
    )


@pytest.mark.parametrize(
    ("path", "allowed"),
    [
        ([JobStatus.OFFERED, JobStatus.RUNNING, JobStatus.DONE], True),
        ([JobStatus.OFFERED, JobStatus.QUEUED, JobStatus.OFFERED], True),
        ([JobStatus.RUNNING], False),
        ([JobStatus.OFFERED, JobStatus.RUNNING, JobStatus.DONE, JobStatus.QUEUED], False),
        ([JobStatus.FAILED, JobStatus.OFFERED], False),
    ],
)
def test_job_transitions(tmp_path: Path, path: list[JobStatus], allowed: bool) -> None:
    store = Store(tmp_path / "db")
    job_id = _job(store)
    if allowed:
        for status in path:
            store.set_job(job_id, status)
    else:
        with pytest.raises(TransitionError):
            for status in path:
                store.set_job(job_id, status)
    store.close()


def test_logs_keep_only_the_newest(tmp_path: Path) -> None:
    store = Store(tmp_path / "db", log_cap=3)
    entries = [
        LogEntry(ts="2026-10-07T09:14:03.512Z", level="info", category="ws", message=str(i))
        for i in range(5)
    ]
    store.add_logs("w1", entries[:2])
    store.add_logs("w1", entries[2:])
    store.add_logs("w2", entries[:1])
    assert [e.message for e in store.worker_logs("w1")] == ["2", "3", "4"]
    assert [e.message for e in store.worker_logs("w1", limit=2)] == ["3", "4"]
    assert [e.message for e in store.worker_logs("w2")] == ["0"]
    store.close()


def test_tokens_are_stored_hashed_and_revocable(tmp_path: Path) -> None:
    store = Store(tmp_path / "db")
    rid = store.add_request("install", "0" * 64, {}, "ua", "127.0.0.1").id
    worker_id = store.approve_request(rid)
    store.add_token(worker_id, "secret-token")
    raw = b"".join(f.read_bytes() for f in tmp_path.glob("db*"))  # WAL included
    assert b"secret-token" not in raw and len(raw) > 0
    assert store.token_valid(worker_id, "secret-token")
    assert not store.token_valid("w_other", "secret-token")
    store.revoke_tokens(worker_id)
    assert not store.token_valid(worker_id, "secret-token")
    store.close()
