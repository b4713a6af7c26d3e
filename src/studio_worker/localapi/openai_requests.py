"""OpenAI-shaped request bodies checked and translated into the wire `task` of a local job.

Each function raises `ApiError(400, "bad_request", ...)` on the first field it refuses.
"""

from __future__ import annotations

import email.parser
import email.policy
import re
from typing import Any

from studio_worker.localapi.http import ApiError

MAX_IMAGES = 4
SPEECH_FORMATS = {"wav": "wav", "mp3": "mp3", "flac": "flac", "ogg": "ogg"}


def _text_content(content: Any) -> str:
    """OpenAI message content: a string, or a list of parts of which the text ones count."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            str(p.get("text", ""))
            for p in content
            if isinstance(p, dict) and p.get("type") == "text"
        )
    return "" if content is None else str(content)


def _size(value: Any) -> tuple[int, int]:
    if value in (None, "auto"):
        return 512, 512
    match = re.fullmatch(r"(\d+)x(\d+)", str(value))
    if match is None:
        raise ApiError(400, "bad_request", f"size: must look like 512x512, not {value!r}")
    return int(match[1]), int(match[2])


def chat_task(body: dict[str, Any]) -> dict[str, Any]:
    """The `llm` task of a `/v1/chat/completions` body."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise ApiError(400, "bad_request", "messages: must be a non-empty list")
    task: dict[str, Any] = {
        "kind": "llm",
        "messages": [
            {"role": str(m.get("role", "user")), "content": _text_content(m.get("content"))}
            for m in messages
            if isinstance(m, dict)
        ],
        "maxTokens": body.get("max_tokens") or body.get("max_completion_tokens") or 512,
        "temperature": 0.7 if body.get("temperature") is None else body["temperature"],
        "topP": body.get("top_p"),
        "chatTemplateKwargs": body.get("chat_template_kwargs"),
    }
    stop = body.get("stop")
    if stop is not None:
        task["stop"] = [stop] if isinstance(stop, str) else stop
    response_format = body.get("response_format")
    if isinstance(response_format, dict) and response_format.get("type") == "json_schema":
        task["jsonSchema"] = response_format.get("json_schema")
    return task


def multipart(content_type: str, raw: bytes) -> tuple[dict[str, str], tuple[bytes, str] | None]:
    """The text fields and the `file` part (bytes, content type) of a multipart body."""
    if not content_type.lower().startswith("multipart/form-data"):
        raise ApiError(400, "bad_request", "the body must be multipart/form-data")
    head = f"Content-Type: {content_type}\r\nMIME-Version: 1.0\r\n\r\n".encode()
    message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(head + raw)
    if not message.is_multipart():
        raise ApiError(400, "bad_request", "the multipart body could not be read")
    fields: dict[str, str] = {}
    upload: tuple[bytes, str] | None = None
    for part in message.iter_parts():
        name = part.get_param("name", header="content-disposition")
        payload = part.get_payload(decode=True)
        if not isinstance(name, str) or not isinstance(payload, bytes):
            continue
        if name == "file":
            upload = (payload, part.get_content_type() or "application/octet-stream")
        else:
            fields[name] = payload.decode("utf-8", errors="replace")
    return fields, upload


def transcription_task(fields: dict[str, str], input_url: str) -> dict[str, Any]:
    """The `audio_stt` task of `/v1/audio/transcriptions` fields, its upload at `input_url`."""
    task: dict[str, Any] = {"kind": "audio_stt", "inputUrl": input_url}
    if fields.get("language"):
        task["language"] = fields["language"]
    if fields.get("prompt"):
        task["prompt"] = fields["prompt"]
    return task


def speech_task(body: dict[str, Any]) -> dict[str, Any]:
    """The `audio_tts` task of a `/v1/audio/speech` body."""
    text = body.get("input")
    if not isinstance(text, str) or not text.strip():
        raise ApiError(400, "bad_request", "input: the text to speak is required")
    fmt = str(body.get("response_format") or "wav")
    ext = SPEECH_FORMATS.get(fmt)
    if ext is None:
        raise ApiError(
            400,
            "bad_request",
            f"response_format {fmt} is not supported: use wav, mp3, flac or ogg",
        )
    task: dict[str, Any] = {"kind": "audio_tts", "text": text, "ext": ext}
    voice = body.get("voice")
    if isinstance(voice, str) and voice:
        task["voice"] = voice
    if body.get("speed") is not None:
        task["speed"] = body["speed"]
    return task


def image_task(body: dict[str, Any]) -> tuple[dict[str, Any], int]:
    """The `image` task of a `/v1/images/generations` body, and how many images it asks."""
    prompt = body.get("prompt")
    if not isinstance(prompt, str) or not prompt.strip():
        raise ApiError(400, "bad_request", "prompt: required")
    if (body.get("response_format") or "b64_json") != "b64_json":
        raise ApiError(400, "bad_request", "response_format: only b64_json is supported")
    n = body.get("n") or 1
    if not isinstance(n, int) or not 1 <= n <= MAX_IMAGES:
        raise ApiError(400, "bad_request", f"n: must be 1 to {MAX_IMAGES}")
    width, height = _size(body.get("size"))
    task: dict[str, Any] = {
        "kind": "image",
        "prompt": prompt,
        "width": width,
        "height": height,
        "ext": "png",
    }
    for key, wire in (
        ("negative_prompt", "negativePrompt"),
        ("steps", "steps"),
        ("seed", "seed"),
        ("cfg_scale", "cfgScale"),
    ):
        if body.get(key) is not None:
            task[wire] = body[key]
    return task, n
