"""Small HTTP helpers shared by the local API's route modules."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

BUSY_MESSAGE = "worker is busy with another job (studio or local); retry shortly"
RETRY_AFTER_S = 2
BODY_CAP_KEY = web.RequestKey("body_cap", int)


class ApiError(Exception):
    """Answered as `{"error": code, "message": text, **extra}` with `status`."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra

    def response(self) -> web.Response:
        return json_error(self.status, self.code, self.message, **self.extra)


class TextError(Exception):
    """Answered as a `text/plain` body with `status` (guards, busy, body caps)."""

    def __init__(self, status: int, text: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(text)
        self.status, self.text, self.headers = status, text, headers or {}

    def response(self) -> web.Response:
        return web.Response(status=self.status, text=self.text, headers=self.headers)


def busy() -> TextError:
    return TextError(503, BUSY_MESSAGE, {"Retry-After": str(RETRY_AFTER_S)})


def json_error(status: int, code: str, message: str, **extra: Any) -> web.Response:
    return web.json_response({"error": code, "message": message, **extra}, status=status)


async def read_body(request: web.Request) -> bytes:
    """The whole body, refused (413 text) as soon as it grows past the route's cap."""
    cap: int = request[BODY_CAP_KEY]
    data = bytearray()
    async for chunk in request.content.iter_chunked(64 * 1024):
        data += chunk
        if len(data) > cap:
            raise TextError(413, f"request body exceeds {cap} bytes")
    return bytes(data)


async def read_json(request: web.Request) -> dict[str, Any]:
    raw = await read_body(request)
    try:
        value = json.loads(raw or b"{}")
    except ValueError as exc:
        raise ApiError(400, "bad_request", f"bad json: {exc}") from None
    except RecursionError:
        raise ApiError(400, "bad_request", "bad json: nested too deeply") from None
    if not isinstance(value, dict):
        raise ApiError(400, "bad_request", "bad json: the body must be a JSON object")
    return value
