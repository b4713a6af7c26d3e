"""A local job's result shaped as the OpenAI answer: JSON, audio bytes, or a chat
completion re-sent as `chat.completion.chunk` SSE events.

A result of the wrong shape answers `500 engine_error`.
"""

from __future__ import annotations

import base64
import json
import re
import time
from typing import Any

from aiohttp import web

from studio_worker.domain.results import BinaryResult, JobResult, JsonResult
from studio_worker.localapi.http import ApiError

AUDIO_TYPES = {"wav": "audio/wav", "mp3": "audio/mpeg", "flac": "audio/flac", "ogg": "audio/ogg"}


def _pieces(text: str) -> list[str]:
    return re.findall(r"\s*\S+", text) or ([text] if text else [])


def chat_completion(job_id: str, result: JobResult) -> dict[str, Any]:
    """The llama engine's `chat.completion`, with an `id` and `created` when it has none."""
    if not isinstance(result, JsonResult) or not isinstance(result.value, dict):
        raise ApiError(500, "engine_error", "the llama engine did not answer a completion")
    answer = dict(result.value)
    answer.setdefault("id", f"chatcmpl-{job_id}")
    answer.setdefault("created", int(time.time()))
    return answer


async def stream_completion(request: web.Request, completion: dict[str, Any]) -> web.StreamResponse:
    """The finished completion, re-sent as `chat.completion.chunk` SSE events."""
    response = web.StreamResponse(
        headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
    )
    await response.prepare(request)
    choice = completion["choices"][0]
    message = choice.get("message", {})
    base = {
        "id": completion["id"],
        "object": "chat.completion.chunk",
        "created": completion["created"],
        "model": completion.get("model"),
    }

    async def send(delta: dict[str, Any], **extra: Any) -> None:
        chunk = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None}]}
        chunk["choices"][0].update(extra.pop("choice", {}))
        chunk.update(extra)
        await response.write(f"data: {json.dumps(chunk)}\n\n".encode())

    await send({"role": "assistant", "content": ""})
    if message.get("reasoning_content"):
        await send({"reasoning_content": message["reasoning_content"]})
    for piece in _pieces(str(message.get("content", ""))):
        await send({"content": piece})
    await send(
        {},
        choice={"finish_reason": choice.get("finish_reason", "stop")},
        usage=completion.get("usage"),
    )
    await response.write(b"data: [DONE]\n\n")
    await response.write_eof()
    return response


def transcription(result: JobResult, response_format: str) -> web.Response:
    """The transcript as `json` (`{"text"}`), `verbose_json` or `text`."""
    if not isinstance(result, JsonResult) or not isinstance(result.value, dict):
        raise ApiError(500, "engine_error", "the speech-to-text engine gave no transcript")
    value = result.value
    if response_format == "text":
        return web.Response(text=str(value.get("text", "")))
    if response_format == "verbose_json":
        return web.json_response({"task": "transcribe", **value})
    if response_format != "json":
        raise ApiError(400, "bad_request", f"response_format {response_format} is not supported")
    return web.json_response({"text": value.get("text", "")})


def speech(result: JobResult) -> web.Response:
    """The spoken audio's bytes, typed by their format."""
    if not isinstance(result, BinaryResult):
        raise ApiError(500, "engine_error", "the text-to-speech engine gave no audio")
    content_type = AUDIO_TYPES.get(result.ext, "application/octet-stream")
    return web.Response(body=result.data, content_type=content_type)


def image(result: JobResult) -> dict[str, str]:
    """One `data` entry of an images answer: the image as `b64_json`."""
    if not isinstance(result, BinaryResult):
        raise ApiError(500, "engine_error", "the image engine gave no image")
    return {"b64_json": base64.b64encode(result.data).decode("ascii")}
