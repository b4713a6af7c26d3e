"""A scripted studio: a real WebSocket server on loopback whose script is the test body."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from http import HTTPStatus
from pathlib import Path
from typing import Any

from websockets.asyncio.server import Request, Response, ServerConnection

from studio_worker.app import Daemon, DaemonTuning
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.engines.registry import EngineRegistry
from studio_worker.session.attempt import Timing

Script = Callable[[ServerConnection], Awaitable[None]]


class ScriptedStudio:
    def __init__(self) -> None:
        self.script: Script | None = None
        self.reject_upgrade_with: int | None = None
        self.connections = 0
        self.url = ""
        self.auth_headers: list[str | None] = []
        self.subprotocols: list[str | None] = []

    def process_request(self, conn: ServerConnection, request: Request) -> Response | None:
        self.auth_headers.append(request.headers.get("Authorization"))
        if self.reject_upgrade_with is not None:
            return conn.respond(HTTPStatus(self.reject_upgrade_with), "go away\n")
        return None

    async def handler(self, conn: ServerConnection) -> None:
        self.connections += 1
        self.subprotocols.append(conn.subprotocol)
        assert self.script is not None
        await self.script(conn)


async def recv_json(conn: ServerConnection, timeout: float = 5.0) -> dict[str, Any]:
    async with asyncio.timeout(timeout):
        data: dict[str, Any] = json.loads(await conn.recv())
        return data


async def recv_type(conn: ServerConnection, wanted: str, timeout: float = 5.0) -> dict[str, Any]:
    """Next frame of type `wanted`, skipping heartbeats and log batches."""
    async with asyncio.timeout(timeout):
        while True:
            frame = await recv_json(conn, timeout)
            if frame["type"] == wanted:
                return frame


async def welcome(conn: ServerConnection, worker_id: str = "w1") -> dict[str, Any]:
    hello = await recv_json(conn)
    assert hello["type"] == "hello"
    await conn.send(
        json.dumps(
            {"type": "welcome", "workerId": worker_id, "serverTime": "2026-11-23T00:00:00.000Z"}
        )
    )
    return hello


def offer(job_id: str, task: dict[str, Any], engine: str = "synthetic") -> str:
    return json.dumps(
        {
            "type": "offer",
            "claim": {
                "jobId": job_id,
                "gameId": "g",
                "assetName": "g/a",
                "model": "m",
                "vramGbEstimate": 0,
                "task": task,
                "modelSource": {"engine": engine},
            },
        }
    )


LLM = {"kind": "llm", "messages": [{"role": "user", "content": "hi"}]}


FAST = DaemonTuning(
    timing=Timing(heartbeat_s=0.2, log_flush_s=0.1, read_idle_s=3.0),
    registration_tick_s=0.2,
    backoff_scale=0.05,
)


def approved_daemon(
    tmp_path: Path, url: str, engines: EngineRegistry | None = None, **settings: Any
) -> Daemon:
    path = tmp_path / "config.toml"
    ConfigStore(path).save(
        Settings(
            api_base_url=url,
            worker_id="w1",
            auth_token="tok-1",
            models_root=tmp_path / "models",
            **settings,
        )
    )
    return Daemon(path, tuning=FAST, engines=engines)
