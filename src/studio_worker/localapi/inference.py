"""OpenAI-shaped local inference (behaviour §8.3) on the models already in the cache.

A model is named `<engine>/<model>`: a folder of the model store (`GET /v1/models` lists
them). Nothing is ever downloaded here: the cached files are handed to the engine as the
job's `model_paths`. Every request is a local job: it takes the one-job gate (a studio job
or another local one holding it answers 503 with `Retry-After`), runs on the same engine
routing as studio jobs, and is recorded in the status store with a `local-` job id.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web
from pydantic import ValidationError

from studio_worker.domain.logs import rfc3339_millis
from studio_worker.domain.results import JobError, JobResult
from studio_worker.domain.tasks import JobOfferClaim, full_prompt, prompt_preview
from studio_worker.localapi import openai_responses
from studio_worker.localapi.http import ApiError, busy, read_body, read_json
from studio_worker.localapi.model_files import (
    ALL_ENGINES,
    CHAT_ENGINES,
    IMAGE_ENGINES,
    STT_ENGINES,
    TTS_ENGINES,
    model_source,
)
from studio_worker.localapi.openai_requests import (
    chat_task,
    image_task,
    multipart,
    speech_task,
    transcription_task,
)
from studio_worker.models import sanitise_id
from studio_worker.models.store import CachedModel
from studio_worker.status.store import JobRecord

if TYPE_CHECKING:
    from studio_worker.localapi.server import LocalApi

log = logging.getLogger(__name__)

__all__ = ["Inference", "model_source"]


class Inference:
    def __init__(self, api: LocalApi) -> None:
        self.api = api
        self._in_use: dict[str, tuple[str, str]] = {}  # job id -> (engine dir, model dir)

    def routes(self, app: web.Application) -> None:
        add = app.router
        add.add_get("/v1/models", self.list_models)
        add.add_post("/v1/chat/completions", self.chat)
        add.add_post("/v1/audio/transcriptions", self.transcribe)
        add.add_post("/v1/audio/speech", self.speech)
        add.add_post("/v1/images/generations", self.images)

    def model_in_use(self, holder: str, engine: str, model: str) -> bool:
        return self._in_use.get(holder) == (sanitise_id(engine), sanitise_id(model))

    # ---- model lookup ------------------------------------------------------------------

    async def _cached(self) -> list[CachedModel]:
        return await asyncio.to_thread(self.api.deps.models.cached)

    async def _find(self, wanted: Any, engines: Sequence[str], what: str) -> CachedModel:
        cached = [m for m in await self._cached() if m.files]
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

    async def list_models(self, request: web.Request) -> web.Response:
        data = [
            {
                "id": f"{m.engine}/{m.model}",
                "object": "model",
                "created": int(m.path.stat().st_mtime),
                "owned_by": "studio-worker",
            }
            for m in await self._cached()
            if m.files and m.engine in ALL_ENGINES
        ]
        return web.json_response({"object": "list", "data": data})

    # ---- running a local job ---------------------------------------------------------------

    async def _run(self, cached: CachedModel, task: dict[str, Any]) -> tuple[str, JobResult]:
        """Run `task` on `cached` under the one-job gate; (job id, result)."""
        deps = self.api.deps
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
            result = await asyncio.to_thread(engine.run, claim, paths, progress, self.api.cancel)
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

    # ---- /v1/chat/completions ------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        task = chat_task(body)
        cached = await self._find(body.get("model"), CHAT_ENGINES, "chat")
        job_id, result = await self._run(cached, task)
        answer = openai_responses.chat_completion(job_id, result)
        if not body.get("stream"):
            return web.json_response(answer)
        return await openai_responses.stream_completion(request, answer)

    # ---- /v1/audio/transcriptions --------------------------------------------------------

    async def transcribe(self, request: web.Request) -> web.Response:
        fields, upload = multipart(
            request.headers.get("Content-Type", ""), await read_body(request)
        )
        if upload is None:
            raise ApiError(400, "bad_request", "file: an audio file upload is required")
        cached = await self._find(fields.get("model"), STT_ENGINES, "speech-to-text")
        data, content_type = upload
        key, url = self.api.offer_input(data, content_type)
        task = transcription_task(fields, url)
        try:
            _, result = await self._run(cached, task)
        finally:
            self.api.drop_input(key)
        return openai_responses.transcription(result, fields.get("response_format") or "json")

    # ---- /v1/audio/speech ----------------------------------------------------------------

    async def speech(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        task = speech_task(body)
        cached = await self._find(body.get("model"), TTS_ENGINES, "text-to-speech")
        _, result = await self._run(cached, task)
        return openai_responses.speech(result)

    # ---- /v1/images/generations ----------------------------------------------------------

    async def images(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        task, n = image_task(body)
        cached = await self._find(body.get("model"), IMAGE_ENGINES, "image")
        data = []
        for index in range(n):
            if index and isinstance(task.get("seed"), int):
                task["seed"] += 1
            _, result = await self._run(cached, task)
            data.append(openai_responses.image(result))
        return web.json_response({"created": int(time.time()), "data": data})


def _first_error(exc: ValidationError) -> str:
    error = exc.errors(include_url=False, include_input=False)[0]
    loc = ".".join(str(p) for p in error["loc"])
    return f"{loc}: {error['msg']}"
