"""The status board: job progress and the downloads view."""

from __future__ import annotations

from datetime import UTC, datetime

from studio_worker.status.store import JobRecord, StatusStore

AT = datetime(2025, 3, 1, 12, 0, 0, tzinfo=UTC)


def record(job_id: str = "job1") -> JobRecord:
    return JobRecord(
        job_id=job_id,
        kind="image",
        model="m",
        engine="synthetic",
        prompt_preview="a fox",
        started_at="2025-03-01T12:00:00.000Z",
    )


def test_job_progress_shows_on_the_current_job() -> None:
    store = StatusStore()
    store.job_started(record())
    assert store.snapshot().to_json()["currentJob"]["progress"] is None

    store.job_progress("job1", 0.25, "step 2/8")
    current = store.snapshot().to_json()["currentJob"]
    assert current["progress"] == 0.25
    assert current["progressNote"] == "step 2/8"


def test_job_progress_is_clamped_and_ignores_other_jobs() -> None:
    store = StatusStore()
    store.job_started(record())
    store.job_progress("job1", 1.7, "over")
    assert store.snapshot().current_job is not None
    assert store.snapshot().current_job.progress == 1.0  # type: ignore[union-attr]
    store.job_progress("job1", -3, "under")
    assert store.snapshot().current_job.progress == 0.0  # type: ignore[union-attr]
    store.job_progress("job1", float("nan"), "nan")
    assert store.snapshot().current_job.progress == 0.0  # type: ignore[union-attr]

    store.job_progress("other", 0.5, "not the current job")
    assert store.snapshot().current_job.progress_note == "nan"  # type: ignore[union-attr]


def test_job_progress_without_a_job_is_a_no_op() -> None:
    store = StatusStore()
    store.job_progress("job1", 0.5, "nothing running")
    assert store.snapshot().current_job is None


def test_finished_job_keeps_its_last_progress() -> None:
    store = StatusStore()
    store.job_started(record())
    store.job_progress("job1", 0.5, "half")
    store.job_finished("job1", "completed", 1200, None)
    (recent,) = store.snapshot().to_json()["recentJobs"]
    assert recent["progress"] == 0.5 and recent["outcome"] == "completed"


def test_downloads_appear_update_and_drop_out_when_finished() -> None:
    store = StatusStore()
    assert store.snapshot().to_json()["downloads"] == []

    store.download_progress("m1", "a.gguf", 100, 1000, 50.0, 18.0, False, at=AT)
    store.download_progress("m1", "b.gguf", 5, None, 0.0, None, False, at=AT)
    store.download_progress("m1", "a.gguf", 400, 1000, 60.04, 10.0, False, at=AT)
    downloads = store.snapshot().to_json()["downloads"]
    assert downloads == [
        {
            "model": "m1",
            "filename": "a.gguf",
            "bytesDone": 400,
            "bytesTotal": 1000,
            "bytesPerSec": 60.0,
            "etaSecs": 10.0,
            "updatedAt": "2025-03-01T12:00:00.000Z",
        },
        {
            "model": "m1",
            "filename": "b.gguf",
            "bytesDone": 5,
            "bytesTotal": None,
            "bytesPerSec": 0.0,
            "etaSecs": None,
            "updatedAt": "2025-03-01T12:00:00.000Z",
        },
    ]

    store.download_progress("m1", "a.gguf", 1000, 1000, 60.0, 0.0, True)
    snap = store.snapshot()
    assert [d.filename for d in snap.downloads] == ["b.gguf"]
    store.download_progress("m1", "b.gguf", 5, None, 0.0, None, True)
    assert store.snapshot().downloads == ()


def test_snapshot_is_a_copy() -> None:
    store = StatusStore()
    store.download_progress("m1", "a.gguf", 1, 2, 1.0, 1.0, False)
    snap = store.snapshot()
    store.download_progress("m1", "a.gguf", 2, 2, 1.0, 0.0, True)
    assert len(snap.downloads) == 1 and snap.downloads[0].done == 1
