"""The studio's operations, shared by the admin HTTP API and the in-process Python API."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import TypeAdapter, ValidationError

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.logs import LogEntry
from studio_worker.domain.tasks import ModelSource, Task
from studio_worker.protocol.frames import WorkerErrorCode
from studio_worker.studio.hub import CLOSE_AUTH_FAILED, CLOSE_WORKER_DELETED, Hub
from studio_worker.studio.jobbook import JobBook
from studio_worker.studio.records import JobRecord, RegisterRequestRecord, RequestStatus
from studio_worker.studio.store import Store

log = logging.getLogger(__name__)

_TASK: TypeAdapter[Task] = TypeAdapter(Task)

DEFAULT_MODEL_SOURCE: dict[str, Any] = {
    "engine": "synthetic",
    "files": [],
    "cliDefaults": {"cfgScale": 0, "steps": 0, "width": 0, "height": 0},
}


class SubmissionError(ValueError):
    """A job the studio refuses to queue; the message says why."""


class NotFound(KeyError):
    def __str__(self) -> str:
        return str(self.args[0]) if self.args else "not found"


class StudioCore:
    def __init__(self, store: Store, jobs: JobBook, hub: Hub) -> None:
        self.store = store
        self.jobs = jobs
        self.hub = hub

    # ---- registration -------------------------------------------------------------

    def requests(self, status: str | None = None) -> list[RegisterRequestRecord]:
        return self.store.list_requests(status)

    def pending_requests(self) -> list[RegisterRequestRecord]:
        return self.store.list_requests(RequestStatus.PENDING.value)

    def approve(self, request_id: str) -> str:
        """Approve a pending request; returns the new worker id."""
        try:
            worker_id = self.store.approve_request(request_id)
        except KeyError:
            raise NotFound(f"unknown register request {request_id}") from None
        log.info("approved %s as worker %s", request_id, worker_id)
        return worker_id

    def reject(self, request_id: str, reason: str) -> None:
        try:
            self.store.reject_request(request_id, reason)
        except KeyError:
            raise NotFound(f"unknown register request {request_id}") from None

    # ---- workers ------------------------------------------------------------------

    def workers(self) -> list[dict[str, Any]]:
        connected = self.hub.connected()
        out = []
        for worker in self.store.list_workers():
            view = worker.to_json()
            session = connected.get(worker.id)
            view["connected"] = session is not None and session.welcomed
            held = self.jobs.held_by(worker.id)
            view["currentJobId"] = held.id if held else None
            out.append(view)
        return out

    def _known_worker(self, worker_id: str) -> None:
        worker = self.store.get_worker(worker_id)
        if worker is None or worker.deleted_at is not None:
            raise NotFound(f"unknown worker {worker_id}")

    async def revoke(self, worker_id: str) -> None:
        """Invalidate every token of the worker; its socket gets a bare close 4001."""
        self._known_worker(worker_id)
        self.store.revoke_tokens(worker_id)
        await self.hub.kick(worker_id, CLOSE_AUTH_FAILED, "auth token revoked", None)

    async def delete_worker(self, worker_id: str) -> None:
        self._known_worker(worker_id)
        self.store.delete_worker(worker_id)
        await self.hub.kick(
            worker_id,
            CLOSE_WORKER_DELETED,
            "worker deleted by the operator",
            WorkerErrorCode.WORKER_DELETED,
        )

    def worker_logs(self, worker_id: str, limit: int = 1000) -> list[LogEntry]:
        return self.store.worker_logs(worker_id, limit)

    # ---- jobs ---------------------------------------------------------------------

    def submit_job(
        self,
        kind: str,
        task: dict[str, Any],
        model: str,
        *,
        model_source: dict[str, Any] | None = None,
        vram_gb_estimate: float = 0.0,
        game_id: str = "local",
        asset_name: str = "",
    ) -> str:
        """Validate and queue a job; returns its id. Raises SubmissionError."""
        task_wire, source_wire = validate_job(kind, task, model, model_source)
        if vram_gb_estimate < 0:
            raise SubmissionError("vramGbEstimate must be >= 0")
        job_id = self.jobs.submit(
            kind=kind,
            model=model,
            task=task_wire,
            model_source=source_wire,
            vram_gb_estimate=float(vram_gb_estimate),
            game_id=game_id or "local",
            asset_name=asset_name or f"{game_id or 'local'}/{kind}",
        )
        log.info("queued %s (%s, model %s)", job_id, kind, model)
        self.hub.wake()
        return job_id

    def get_job(self, job_id: str) -> JobRecord | None:
        return self.jobs.get(job_id)

    def list_jobs(self, status: str | None = None) -> list[JobRecord]:
        return self.store.list_jobs(status)


def validate_job(
    kind: str, task: dict[str, Any], model: str, model_source: dict[str, Any] | None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The canonical wire forms of a job's task and model source, or SubmissionError."""
    try:
        TaskKind(kind)
    except ValueError:
        kinds = ", ".join(k.value for k in TaskKind)
        raise SubmissionError(f"unknown kind {kind!r}; one of {kinds}") from None
    if not isinstance(task, dict):
        raise SubmissionError("task must be a JSON object")
    if not model:
        raise SubmissionError("model is required")
    try:
        parsed = _TASK.validate_python({**task, "kind": task.get("kind", kind)})
    except ValidationError as exc:
        raise SubmissionError(f"invalid task: {_describe(exc)}") from None
    if parsed.kind != kind:
        raise SubmissionError(f"task kind {parsed.kind.value!r} does not match kind {kind!r}")
    try:
        source = ModelSource.model_validate(model_source or DEFAULT_MODEL_SOURCE)
    except ValidationError as exc:
        raise SubmissionError(f"invalid modelSource: {_describe(exc)}") from None
    return parsed.to_wire(), source.to_wire()


def _describe(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:3]:
        where = ".".join(str(p) for p in err["loc"]) or "value"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)
