"""Opening the socket (protocol §3.1): Bearer + subprotocol, 15 s, upgrade failures sorted."""

from __future__ import annotations

import asyncio

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

from studio_worker import user_agent
from studio_worker.protocol.urls import BaseUrlError, StudioLink, ws_url

SUBPROTOCOL = Subprotocol("studio-worker-v1")
CONNECT_TIMEOUT_S = 15.0
CLOSE_TIMEOUT_S = 5.0
HTTP_ERROR_BODY_MAX_CHARS = 300
MAX_FRAME_BYTES = 64 * 1024 * 1024


class UpgradeAuthFailed(Exception):
    """HTTP 401 on the upgrade: terminal."""


class ConnectFailed(Exception):
    """Anything else that kept the socket from opening: reconnect with backoff."""


def _clip(body: bytes | bytearray) -> str:
    text = body.decode("utf-8", errors="replace").strip()
    if len(text) > HTTP_ERROR_BODY_MAX_CHARS:
        return text[:HTTP_ERROR_BODY_MAX_CHARS] + "…"
    return text


async def open_socket(link: StudioLink, timeout_s: float = CONNECT_TIMEOUT_S) -> ClientConnection:
    try:
        url = ws_url(link.base_url, link.worker_id)
    except BaseUrlError as exc:
        raise ConnectFailed(f"invalid base url: {exc}") from None
    try:
        async with asyncio.timeout(timeout_s):
            return await connect(
                url,
                additional_headers={"Authorization": f"Bearer {link.auth_token}"},
                subprotocols=[SUBPROTOCOL],
                user_agent_header=user_agent(),
                close_timeout=CLOSE_TIMEOUT_S,
                max_size=MAX_FRAME_BYTES,
                # The studio sends a frame at least every 5 s (heartbeatAck); our own
                # read-idle timer judges liveness, library pings only keep NATs open.
                ping_interval=20,
                ping_timeout=20,
            )
    except TimeoutError:
        raise ConnectFailed(f"connect timed out after {timeout_s:g}s") from None
    except InvalidStatus as exc:
        status = exc.response.status_code
        if status == 401:
            raise UpgradeAuthFailed("401 on websocket upgrade") from None
        raise ConnectFailed(
            f"HTTP {status} on websocket upgrade: {_clip(exc.response.body or b'')}"
        ) from None
    except (OSError, WebSocketException) as exc:
        raise ConnectFailed(f"connect failed: {type(exc).__name__}: {exc}") from None
