"""Local jobs: the cached model a request names, and a task run on it as a `local-` job
under the one-job gate, recorded in the status store like a studio job."""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError

from studio_worker.domain.logs import rfc3339_millis
from studio_worker.domain.results import JobError, JobResult
from studio_worker.domain.tasks import JobOfferClaim, full_prompt, prompt_preview
from studio_worker.localapi.http import ApiError, busy
from studio_worker.localapi.model_files import model_source
from studio_worker.models import sanitise_id
from studio_worker.models.store import CachedModel
from studio_worker.status.store import JobRecord

if TYPE_CHECKING:
    from studio_worker.localapi.server import LocalApiDeps

log = logging.getLogger(__name__)


class LocalJobs:
    def __init__(self, deps: LocalApiDeps, cancel: threading.Event) -> None:
        self.deps = deps
        self.cancel = cancel  # set when the local API closes: running jobs stop early
        self._in_use: dict[str, tuple[str, str]] = {}  # job id -> (engine dir, model dir)

    def model_in_use(self, holder: str, engine: str, model: str) -> bool:
        return self._in_use.get(holder) == (sanitise_id(engine), sanitise_id(model))

    # ---- model lookup ------------------------------------------------------------------

    async def cached(self) -> list[CachedModel]:
        return await asyncio.to_thread(self.deps.models.cached)

    async def find(self, wanted: Any, engines: Sequence[str], what: str) -> CachedModel:
        cached = [m for m in await self.cached() if m.files]
        if wanted in (None, ""):
            for model in cached:
                if model.engine in engines:
                    return model
            raise ApiError(400, "no_model", f"no {what} model is in the model cache")
        if not isinstance(wanted, str) or "/" not in wanted:
            raise ApiError(
                404,
                "unknown_model",
                f"model must be <engine>/<model> (see GET /v1/models): {wanted}",
            )
        engine, _, name = wanted.partition("/")
        for model in cached:
            if (model.engine, model.model) == (sanitise_id(engine), sanitise_id(name)):
                if model.engine not in engines:
                    raise ApiError(400, "wrong_model_kind", f"model {wanted} is not a {what} model")
                return model
        raise ApiError(404, "unknown_model", f"model {wanted} is not in the model cache")

    # ---- running a local job ---------------------------------------------------------------

    async def run(self, cached: CachedModel, task: dict[str, Any]) -> tuple[str, JobResult]:
        """Run `task` on `cached` under the one-job gate; (job id, result)."""
        deps = self.deps
        source, paths = model_source(cached)
        job_id = f"local-{secrets.token_hex(8)}"
        model_id = f"{cached.engine}/{cached.model}"
        try:
            claim = JobOfferClaim.model_validate(
                {
                    "jobId": job_id,
                    "gameId": "local",
                    "assetName": "local",
                    "model": model_id,
                    "vramGbEstimate": 0,
                    "task": task,
                    "modelSource": source,
                }
            )
        except ValidationError as exc:
            raise ApiError(400, "bad_request", _first_error(exc)) from None
        try:
            engine = deps.engines.resolve(cached.engine, model_id)
        except JobError as exc:
            raise ApiError(400, "engine_missing", exc.message) from None
        if not deps.gate.try_reserve(job_id):
            raise busy()
        self._in_use[job_id] = (cached.engine, cached.model)
        started = time.monotonic()
        deps.status.job_started(
            JobRecord(
                job_id=job_id,
                kind=claim.task.kind.value,
                model=model_id,
                engine=cached.engine,
                prompt_preview=prompt_preview(full_prompt(claim.task)),
                started_at=rfc3339_millis(datetime.now(UTC)),
            )
        )
        log.info(
            "local job %s started: %s on %s",
            job_id,
            claim.task.kind.value,
            model_id,
            extra={"op": "local_job", "job_id": job_id},
        )

        def progress(fraction: float, note: str) -> None:
            deps.status.job_progress(job_id, fraction, note)

        outcome, error = "failed", None
        try:
            result = await asyncio.to_thread(engine.run, claim, paths, progress, self.cancel)
            outcome = "completed"
            return job_id, result
        except JobError as exc:
            error = exc.message
            status = 500 if exc.retryable else 400
            raise ApiError(status, "job_failed", exc.message) from None
        except Exception as exc:  # an engine crash fails the request, never the worker
            error = f"{type(exc).__name__}: {exc}"
            log.exception("local job %s crashed", job_id, extra={"job_id": job_id})
            raise ApiError(500, "engine_error", error) from None
        finally:
            elapsed = int((time.monotonic() - started) * 1000)
            self._in_use.pop(job_id, None)
            deps.gate.release(job_id)
            deps.status.job_finished(job_id, outcome, elapsed, error)
            log.info(
                "local job %s %s in %dms%s",
                job_id,
                outcome,
                elapsed,
                f": {error}" if error else "",
                extra={"op": "local_job", "job_id": job_id},
            )


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in error["loc"])
    return f"{loc}: {error['msg']}"
