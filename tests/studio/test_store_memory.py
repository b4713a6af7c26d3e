"""The store's in-memory jobs: held jobs live in memory, readers never see the difference."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from studio_worker.domain.logs import rfc3339_millis
from studio_worker.studio import store as store_module
from studio_worker.studio.records import JobStatus, utc_millis
from studio_worker.studio.store import Store


def _job(store: Store, n: int = 0) -> str:
    return store.add_job(
        kind="llm",
        model="m",
        task={"kind": "llm", "messages": [{"role": "user", "content": f"q{n}"}]},
        model_source={"engine": "synthetic"},
        vram_gb_estimate=0,
        game_id="g",
        asset_name="a",
    )


def _reopened(path: Path) -> Store:
    """What a studio killed right now would find on its next start."""
    return Store(path)


def test_held_jobs_read_the_same_as_before_and_come_back_queued_after_a_crash(
    tmp_path: Path,
) -> None:
    path = tmp_path / "db"
    store = Store(path)
    offered, running, waiting = _job(store, 1), _job(store, 2), _job(store, 3)
    store.set_job(offered, JobStatus.OFFERED, worker_id="w_a")
    store.set_job(running, JobStatus.OFFERED, worker_id="w_b")
    store.set_job(running, JobStatus.RUNNING)

    got = store.get_job(running)
    assert got is not None and got.status is JobStatus.RUNNING and got.worker_id == "w_b"
    assert [j.id for j in store.held_jobs()] == [offered, running]
    assert [j.id for j in store.held_jobs("w_a")] == [offered]
    assert [j.id for j in store.list_jobs("running")] == [running]
    assert [j.id for j in store.list_jobs("offered")] == [offered]
    assert [j.id for j in store.list_jobs("queued")] == [waiting]
    assert [(j.id, j.status) for j in store.list_jobs()] == [
        (waiting, JobStatus.QUEUED),
        (running, JobStatus.RUNNING),
        (offered, JobStatus.OFFERED),
    ]
    assert [j.id for _, j in store.queued_jobs()] == [waiting]
    assert [q.id for q in store.queued_page()] == [waiting]
    assert [q.id for q in store.queued_page(limit=1)] == [waiting]

    unsaved = _reopened(path)  # the accepting worker is not written yet (next loop tick)
    assert {j.id: j.worker_id for j in unsaved.list_jobs()}[running] is None
    unsaved.close()
    store.save_holders()
    crashed = _reopened(path)  # offered is not durable: back in the queue
    assert {j.id for j in crashed.list_jobs("queued")} == {offered, running, waiting}
    assert all(j.attempts == 0 for j in crashed.list_jobs())
    # running keeps only its worker, so the studio can hold it again for that worker
    assert {j.id: j.worker_id for j in crashed.list_jobs()} == {
        offered: None,
        running: "w_b",
        waiting: None,
    }
    assert [(j.id, j.status, j.worker_id) for j in crashed.resume_interrupted()] == [
        (running, JobStatus.RUNNING, "w_b")
    ]
    assert [j.id for j in crashed.held_jobs("w_b")] == [running]
    assert [q.id for q in crashed.queued_page()] == [offered, waiting]
    crashed.close()
    store.close()


def test_done_is_durable_with_everything_set_while_held(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = Store(path)
    job_id = _job(store)
    store.set_job(job_id, JobStatus.OFFERED, worker_id="w_a")
    store.set_job(job_id, JobStatus.RUNNING)
    done = store.set_job(job_id, JobStatus.DONE, result_json={"text": None}, prompt="p")
    assert done.result == {"text": None} and done.worker_id == "w_a"
    assert store.held_jobs() == []

    again = _reopened(path).get_job(job_id)
    assert again is not None
    assert (again.status, again.worker_id, again.result, again.prompt) == (
        JobStatus.DONE,
        "w_a",
        {"text": None},
        "p",
    )
    assert again.finished_at is not None
    store.close()


def test_requeue_and_fail_from_held_are_durable(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = Store(path)
    retried, failed = _job(store, 1), _job(store, 2)
    store.set_job(retried, JobStatus.OFFERED, worker_id="w_a")
    store.set_job(retried, JobStatus.QUEUED, worker_id=None, attempts=1, error="boom")
    store.set_job(failed, JobStatus.OFFERED, worker_id="w_b")
    store.set_job(failed, JobStatus.FAILED, attempts=1, error="bad")

    reopened = _reopened(path)
    a, b = reopened.get_job(retried), reopened.get_job(failed)
    assert a is not None and (a.status, a.attempts, a.error) == (JobStatus.QUEUED, 1, "boom")
    assert b is not None and (b.status, b.worker_id) == (JobStatus.FAILED, "w_b")
    reopened.close()
    store.close()


def test_rows_held_by_an_older_studio_are_requeued_on_start(tmp_path: Path) -> None:
    path = tmp_path / "db"
    store = Store(path)
    job_id = _job(store)
    store._db.execute("UPDATE jobs SET status='running', worker_id='w_a' WHERE id=?", (job_id,))
    store.close()

    reopened = Store(path)
    assert [j.id for j in reopened.held_jobs()] == [job_id]
    assert reopened.requeue_interrupted() == [job_id]
    again = Store(path).get_job(job_id)
    assert again is not None and again.status is JobStatus.QUEUED and again.worker_id is None
    reopened.close()


def test_the_queued_cache_is_bounded_and_falls_back_to_the_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(store_module, "FRESH_CAP", 2)
    store = Store(tmp_path / "db")
    ids = [_job(store, n) for n in range(4)]
    assert len(store._fresh) == 2
    for n, job_id in enumerate(ids):
        job = store.get_job(job_id)
        assert job is not None and job.task["messages"][0]["content"] == f"q{n}"
    store.set_job(ids[0], JobStatus.OFFERED, worker_id="w_a")  # read from the database
    assert [j.id for j in store.held_jobs()] == [ids[0]]
    store.close()


@pytest.mark.parametrize(
    "moment",
    [
        datetime(2026, 1, 2, 3, 4, 5, 0, tzinfo=UTC),
        datetime(2026, 12, 31, 23, 59, 59, 999_999, tzinfo=UTC),
        datetime(2026, 5, 6, 7, 8, 9, 1_500, tzinfo=UTC),
    ],
)
def test_timestamps_keep_the_wire_format(moment: datetime) -> None:
    assert utc_millis(moment) == rfc3339_millis(moment)


def test_the_delivery_counts_stay_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The studio counts outcomes per job for the fault tests; only the most recent
    `DELIVERIES_KEPT` jobs are kept, so months of jobs do not grow its memory."""
    from studio_worker.studio import jobbook

    monkeypatch.setattr(jobbook, "DELIVERIES_KEPT", 3)
    book = jobbook.JobBook(Store(tmp_path / "db"))
    for n in range(5):
        book._delivered(f"job-{n}")
    book._delivered("job-3")  # a second outcome for a recent job: counted, kept
    assert dict(book.deliveries) == {"job-2": 1, "job-4": 1, "job-3": 2}
