"""Worker-side peers of the studio tests: real HTTP (httpx) and WebSocket (websockets)."""

from __future__ import annotations

import asyncio
import json
import secrets
from typing import Any

import httpx
from websockets.asyncio.client import ClientConnection, connect
from websockets.typing import Subprotocol

from studio_worker.protocol.registration import secret_hash
from studio_worker.studio import StudioServer

ADMIN = "test-admin-token"


def caps(**overrides: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "machineName": "test-box",
        "username": "tester",
        "agentVersion": "0.5.0",
        "engine": "synthetic",
        "vramTotalGb": 8.0,
        "vramThresholdGb": 8.0,
        "autoEnabled": True,
        "onlyWhenIdle": False,
        "supportedModels": ["synthetic"],
        "taskKinds": ["image", "llm", "audio_stt", "audio_tts", "video"],
        "supportedModelsPerKind": {},
    }
    base.update(overrides)
    return base


LLM_TASK = {"kind": "llm", "messages": [{"role": "user", "content": "Name three dragons."}]}
IMAGE_TASK = {"kind": "image", "prompt": "a lantern"}


class Peer:
    """A worker's-eye view of the studio: HTTP via httpx, WebSocket via websockets."""

    def __init__(self, studio: StudioServer, base: str, http: httpx.AsyncClient) -> None:
        self.studio = studio
        self.base = base
        self.http = http

    async def register(self, install_id: str | None = None) -> tuple[str, str]:
        """POST register-request; returns (requestId, raw secret)."""
        secret = secrets.token_hex(32)
        body = {
            "installId": install_id or secrets.token_hex(16),
            "registrationSecretHash": secret_hash(secret),
            "capabilities": caps(),
            "userAgent": "studio-worker/0.5.0",
        }
        r = await self.http.post("/graphics/api/workers/register-request", json=body)
        assert r.status_code == 200, r.text
        assert r.json()["status"] == "pending"
        return r.json()["requestId"], secret

    async def poll(self, request_id: str, secret: str) -> httpx.Response:
        return await self.http.get(
            f"/graphics/api/workers/register-requests/{request_id}",
            headers={"Authorization": f"Bearer {secret}"},
        )

    async def approved_worker(self) -> tuple[str, str]:
        """Register, approve in-process, poll: returns (workerId, authToken)."""
        request_id, secret = await self.register()
        self.studio.approve(request_id)
        body = (await self.poll(request_id, secret)).json()
        return body["workerId"], body["authToken"]

    async def open(self, worker_id: str, token: str) -> ClientConnection:
        url = self.base.replace("http://", "ws://") + f"/graphics/api/workers/{worker_id}/connect"
        return await connect(
            url,
            additional_headers={"Authorization": f"Bearer {token}"},
            subprotocols=[Subprotocol("studio-worker-v1")],
            open_timeout=5,
        )

    async def session(self, worker_id: str, token: str, **cap: Any) -> ClientConnection:
        """Open, hello, expect welcome, send one heartbeat."""
        ws = await self.open(worker_id, token)
        await send(ws, {"type": "hello", "authToken": token, "capabilities": caps(**cap)})
        welcome = await recv(ws)
        assert welcome["type"] == "welcome", welcome
        await send(ws, {"type": "heartbeat", "capabilities": caps(**cap)})
        return ws

    async def worker_session(self, **cap: Any) -> tuple[str, str, ClientConnection]:
        worker_id, token = await self.approved_worker()
        return worker_id, token, await self.session(worker_id, token, **cap)


async def send(ws: ClientConnection, frame: dict[str, Any]) -> None:
    await ws.send(json.dumps(frame))


async def recv(ws: ClientConnection, wait_s: float = 5.0) -> dict[str, Any]:
    raw = await asyncio.wait_for(ws.recv(), wait_s)
    data = json.loads(raw)
    assert isinstance(data, dict)
    return data


async def expect(ws: ClientConnection, kind: str, wait_s: float = 5.0) -> dict[str, Any]:
    """The next frame of type `kind`, skipping heartbeat acks."""
    while True:
        frame = await recv(ws, wait_s)
        if frame["type"] == "heartbeatAck" and kind != "heartbeatAck":
            continue
        assert frame["type"] == kind, frame
        return frame


async def no_offer(ws: ClientConnection, wait: float = 0.4) -> None:
    """Assert that no offer arrives within `wait` seconds (acks are fine)."""
    try:
        async with asyncio.timeout(wait):
            while True:
                frame = json.loads(await ws.recv())
                assert frame["type"] != "offer", frame
    except TimeoutError:
        pass
