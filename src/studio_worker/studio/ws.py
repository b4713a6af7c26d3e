"""The worker WebSocket route `GET /graphics/api/workers/{workerId}/connect` (protocol §3)."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, datetime

from aiohttp import WSMsgType, web

from studio_worker.domain.logs import rfc3339_millis
from studio_worker.protocol.frames import (
    FrameError,
    Hello,
    Welcome,
    WorkerErrorCode,
    WorkerFrame,
    decode_worker_frame,
)
from studio_worker.studio.hub import (
    CLOSE_AUTH_FAILED,
    CLOSE_DUPLICATE_WORKER,
    CLOSE_PROTOCOL_VIOLATION,
    Hub,
    ProtocolViolation,
    Session,
)
from studio_worker.studio.store import Store

log = logging.getLogger(__name__)

SUBPROTOCOL = "studio-worker-v1"
HELLO_TIMEOUT_S = 15.0
MAX_FRAME_BYTES = 16 * 1024 * 1024
CLOSE_TIMEOUT_S = 5.0  # how long a close waits for the peer's answer (§3.5)
CLOSE_INTERNAL_ERROR = 1011


def bearer(request: web.Request) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return None
    return token.strip()


class SessionEnded(Exception):
    """The socket closed (or was closed by us); the handler just returns."""


class WorkerSocket:
    """Serves one worker socket from upgrade to close."""

    def __init__(self, store: Store, hub: Hub) -> None:
        self._store = store
        self._hub = hub

    async def handle(self, request: web.Request) -> web.StreamResponse:
        worker_id = request.match_info["workerId"]
        token = bearer(request)
        if token is None or not self._store.token_valid(worker_id, token):
            # Plain HTTP 401, no upgrade: the worker treats it as terminal (§3.1).
            return web.json_response({"error": "invalid auth token"}, status=401)
        ws = web.WebSocketResponse(
            protocols=(SUBPROTOCOL,),
            max_msg_size=MAX_FRAME_BYTES,
            heartbeat=None,
            timeout=CLOSE_TIMEOUT_S,
            # Frames are small JSON: deflate costs more CPU per frame than it saves on
            # the wire, and refusing it here turns it off for the worker's end too.
            compress=False,
        )
        await ws.prepare(request)
        session = Session(worker_id=worker_id, ws=ws)
        try:
            await self._serve(session)
        except ProtocolViolation as exc:
            log.info("protocol violation by %s: %s", worker_id, exc)
            await session.close(
                CLOSE_PROTOCOL_VIOLATION, str(exc), WorkerErrorCode.PROTOCOL_VIOLATION
            )
        except SessionEnded:
            pass
        except Exception:
            log.exception("session of %s failed", worker_id)
            await session.close(
                CLOSE_INTERNAL_ERROR, "internal error", WorkerErrorCode.INTERNAL_ERROR
            )
        finally:
            self._hub.detach(session)
        return ws

    async def _serve(self, session: Session) -> None:
        try:
            async with asyncio.timeout(HELLO_TIMEOUT_S):
                first = await self._next_frame(session)
        except TimeoutError:
            raise ProtocolViolation("no hello within 15 s") from None
        if not isinstance(first, Hello):
            raise ProtocolViolation("session not authenticated")
        if not self._store.token_valid(session.worker_id, first.auth_token):
            await session.close(
                CLOSE_AUTH_FAILED, "invalid auth token", WorkerErrorCode.AUTH_FAILED
            )
            return
        await self._welcome(session, first)
        while True:
            frame = await self._next_frame(session)
            await self._hub.on_frame(session, frame)

    async def _welcome(self, session: Session, hello: Hello) -> None:
        session.capabilities = hello.capabilities
        self._store.touch_worker(session.worker_id, hello.capabilities.to_wire())
        older = self._hub.attach(session)
        if older is not None:
            await older.close(
                CLOSE_DUPLICATE_WORKER,
                "another connection opened for this worker",
                WorkerErrorCode.DUPLICATE_WORKER,
            )
        welcome = Welcome(
            worker_id=session.worker_id, server_time=rfc3339_millis(datetime.now(UTC))
        )
        if not await session.send(welcome):
            raise SessionEnded
        self._hub.welcomed(session)

    async def _next_frame(self, session: Session) -> WorkerFrame:
        msg = await session.ws.receive()
        if msg.type is WSMsgType.TEXT:
            try:
                return decode_worker_frame(msg.data)
            except FrameError as exc:
                raise ProtocolViolation(exc.reason) from None
        if msg.type is WSMsgType.BINARY:
            raise ProtocolViolation("binary frames are not part of the protocol")
        raise SessionEnded
