"""Job lifecycle on top of the store: offers, attempts, outcomes, and change signalling.

Every status change goes through here so waiters (`wait_for`) are woken, not polling:
each change wakes only the waiters of that job.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from pathlib import Path
from typing import Any

from studio_worker.studio.records import HELD, JobRecord, JobStatus
from studio_worker.studio.store import Store

log = logging.getLogger(__name__)


DELIVERIES_KEPT = 10_000


class JobBook:
    def __init__(self, store: Store, *, max_attempts: int = 3) -> None:
        self._store = store
        self.max_attempts = max_attempts
        self._waiters: dict[str, list[asyncio.Future[JobRecord]]] = {}
        # Outcomes (result or fail) taken from workers per job, since this studio
        # started: the fault tests read it to prove nothing is delivered twice. Only the
        # most recent DELIVERIES_KEPT jobs are counted, so a long-running studio's memory
        # stays flat.
        self.deliveries: OrderedDict[str, int] = OrderedDict()

    # ---- queries ------------------------------------------------------------------

    def get(self, job_id: str) -> JobRecord | None:
        return self._store.get_job(job_id)

    def held_by(self, worker_id: str) -> JobRecord | None:
        held = self._store.held_jobs(worker_id)
        return held[0] if held else None

    def holds(self, worker_id: str, job_id: str) -> JobRecord | None:
        """The job if `worker_id` holds it (offered to it or running on it)."""
        job = self._store.get_job(job_id)
        if job is None or job.worker_id != worker_id or job.status not in HELD:
            return None
        return job

    def busy_workers(self) -> set[str]:  # from the store's in-memory mirror: no SQL
        return {job.worker_id for job in self._store.held_jobs() if job.worker_id}

    # ---- transitions ----------------------------------------------------------------

    def submit(self, **fields: Any) -> str:
        return self._store.add_job(**fields)  # a new job has no waiters yet

    def offer(self, job_id: str, worker_id: str) -> JobRecord:
        updated = self._store.set_job(job_id, JobStatus.OFFERED, worker_id=worker_id)
        self._signal(updated)
        return updated

    def start(self, job_id: str) -> None:
        self._signal(self._store.set_job(job_id, JobStatus.RUNNING))

    def requeue(self, job_id: str, *, spend: bool, error: str | None = None) -> JobRecord:
        """Back to the queue; `spend` uses up an attempt and fails the job past the cap."""
        job = self._store.get_job(job_id)
        if job is None or job.terminal:
            raise KeyError(job_id)
        attempts = job.attempts + (1 if spend else 0)
        if attempts >= self.max_attempts:
            reason = error or "gave up"
            updated = self._store.set_job(
                job_id,
                JobStatus.FAILED,
                attempts=attempts,
                error=f"{reason} (after {attempts} attempts)",
            )
        else:
            updated = self._store.set_job(
                job_id, JobStatus.QUEUED, attempts=attempts, worker_id=None, error=error
            )
        log.info("job %s requeued -> %s", job_id, updated.status.value)
        self._signal(updated)
        return updated

    def fail(self, job_id: str, error: str, *, retryable: bool) -> JobRecord:
        self._delivered(job_id)
        if retryable:
            return self.requeue(job_id, spend=True, error=error)
        job = self._store.get_job(job_id)
        attempts = (job.attempts if job else 0) + 1
        updated = self._store.set_job(job_id, JobStatus.FAILED, error=error, attempts=attempts)
        self._signal(updated)
        return updated

    def complete_json(self, job_id: str, result: Any, prompt: str | None) -> JobRecord:
        self._delivered(job_id)
        updated = self._store.set_job(
            job_id,
            JobStatus.DONE,
            result_json=result,
            prompt=prompt,
            error=None,
        )
        self._signal(updated)
        return updated

    def complete_file(
        self, job_id: str, *, path: Path, ext: str, mime: str, size: int, prompt: str
    ) -> JobRecord:
        self._delivered(job_id)
        updated = self._store.set_job(
            job_id,
            JobStatus.DONE,
            result_path=str(path),
            ext=ext,
            mime=mime,
            size=size,
            prompt=prompt,
            error=None,
        )
        self._signal(updated)
        return updated

    def _delivered(self, job_id: str) -> None:
        self.deliveries[job_id] = self.deliveries.get(job_id, 0) + 1
        self.deliveries.move_to_end(job_id)
        while len(self.deliveries) > DELIVERIES_KEPT:
            self.deliveries.popitem(last=False)

    # ---- waiting ------------------------------------------------------------------

    async def wait_for(
        self, job_id: str, limit_s: float, statuses: tuple[JobStatus, ...] = ()
    ) -> JobRecord:
        """Wait until the job is terminal (or in one of `statuses`); TimeoutError if not."""
        wanted = statuses or (JobStatus.DONE, JobStatus.FAILED)
        job = self._store.get_job(job_id)
        async with asyncio.timeout(limit_s):
            while True:
                if job is None:
                    raise KeyError(job_id)
                if job.status in wanted:
                    return job
                changed = asyncio.get_running_loop().create_future()
                waiters = self._waiters.setdefault(job_id, [])
                waiters.append(changed)
                try:
                    woken = await changed
                finally:
                    if self._waiters.get(job_id) is waiters:  # not signalled: stop listening
                        waiters.remove(changed)
                        if not waiters:
                            del self._waiters[job_id]
                # Done and failed are final; anything else, read afresh: more changes may
                # have landed before this task ran.
                job = woken if woken.terminal else self._store.get_job(job_id)

    def _signal(self, job: JobRecord) -> None:
        for waiter in self._waiters.pop(job.id, ()):
            if not waiter.done():
                waiter.set_result(job)
