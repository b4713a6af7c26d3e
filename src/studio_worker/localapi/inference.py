"""OpenAI-shaped local inference (behaviour §8.3) on the models already in the cache.

A model is named `<engine>/<model>`: a folder of the model store (`GET /v1/models` lists
them). Nothing is ever downloaded here: the cached files are handed to the engine as the
job's `model_paths`. Every request is a local job: it takes the one-job gate (a studio job
or another local one holding it answers 503 with `Retry-After`), runs on the same engine
routing as studio jobs, and is recorded in the status store with a `local-` job id.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from aiohttp import web

from studio_worker.localapi import openai_responses
from studio_worker.localapi.http import ApiError, read_body, read_json
from studio_worker.localapi.local_jobs import LocalJobs
from studio_worker.localapi.model_files import (
    ALL_ENGINES,
    CHAT_ENGINES,
    IMAGE_ENGINES,
    STT_ENGINES,
    TTS_ENGINES,
)
from studio_worker.localapi.openai_requests import (
    chat_task,
    image_task,
    multipart,
    speech_task,
    transcription_task,
)

if TYPE_CHECKING:
    from studio_worker.localapi.server import LocalApi


class Inference:
    def __init__(self, api: LocalApi) -> None:
        self.api = api
        self.jobs = LocalJobs(api.deps, api.cancel)

    def routes(self, app: web.Application) -> None:
        add = app.router
        add.add_get("/v1/models", self.list_models)
        add.add_post("/v1/chat/completions", self.chat)
        add.add_post("/v1/audio/transcriptions", self.transcribe)
        add.add_post("/v1/audio/speech", self.speech)
        add.add_post("/v1/images/generations", self.images)

    def model_in_use(self, holder: str, engine: str, model: str) -> bool:
        return self.jobs.model_in_use(holder, engine, model)

    async def list_models(self, request: web.Request) -> web.Response:
        data = [
            {
                "id": f"{m.engine}/{m.model}",
                "object": "model",
                "created": int(m.path.stat().st_mtime),
                "owned_by": "studio-worker",
            }
            for m in await self.jobs.cached()
            if m.files and m.engine in ALL_ENGINES
        ]
        return web.json_response({"object": "list", "data": data})

    # ---- /v1/chat/completions ------------------------------------------------------------

    async def chat(self, request: web.Request) -> web.StreamResponse:
        body = await read_json(request)
        task = chat_task(body)
        cached = await self.jobs.find(body.get("model"), CHAT_ENGINES, "chat")
        job_id, result = await self.jobs.run(cached, task)
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
        cached = await self.jobs.find(fields.get("model"), STT_ENGINES, "speech-to-text")
        data, content_type = upload
        key, url = self.api.offer_input(data, content_type)
        task = transcription_task(fields, url)
        try:
            _, result = await self.jobs.run(cached, task)
        finally:
            self.api.drop_input(key)
        return openai_responses.transcription(result, fields.get("response_format") or "json")

    # ---- /v1/audio/speech ----------------------------------------------------------------

    async def speech(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        task = speech_task(body)
        cached = await self.jobs.find(body.get("model"), TTS_ENGINES, "text-to-speech")
        _, result = await self.jobs.run(cached, task)
        return openai_responses.speech(result)

    # ---- /v1/images/generations ----------------------------------------------------------

    async def images(self, request: web.Request) -> web.Response:
        body = await read_json(request)
        task, n = image_task(body)
        cached = await self.jobs.find(body.get("model"), IMAGE_ENGINES, "image")
        data = []
        for index in range(n):
            if index and isinstance(task.get("seed"), int):
                task["seed"] += 1
            _, result = await self.jobs.run(cached, task)
            data.append(openai_responses.image(result))
        return web.json_response({"created": int(time.time()), "data": data})
