"""The worker's session against a scripted studio over real loopback sockets."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
from scripted_studio import (
    LLM,
    ScriptedStudio,
    approved_daemon,
    offer,
    recv_json,
    recv_type,
    welcome,
)
from websockets.asyncio.server import ServerConnection

from studio_worker.app import EXIT_AUTH_FAILED, EXIT_FATAL, EXIT_OK
from studio_worker.config.store import ConfigStore
from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import JobResult, JsonResult
from studio_worker.domain.tasks import JobOfferClaim
from studio_worker.engines.registry import EngineRegistry
from studio_worker.engines.synthetic import SyntheticEngine


async def run_daemon(daemon: Any, timeout: float = 15.0) -> int:
    async with asyncio.timeout(timeout):
        code: int = await daemon.run()
        return code


async def test_hello_carries_token_subprotocol_and_capabilities(
    studio: ScriptedStudio, tmp_path: Path
) -> None:
    daemon = approved_daemon(tmp_path, studio.url)
    seen: dict[str, Any] = {}

    async def script(conn: ServerConnection) -> None:
        seen["hello"] = await welcome(conn)
        seen["heartbeat"] = await recv_type(conn, "heartbeat")
        daemon.stop.set()
        await conn.wait_closed()
        seen["close"] = (conn.close_code, conn.close_reason)

    studio.script = script
    assert await run_daemon(daemon) == EXIT_OK
    assert studio.auth_headers == ["Bearer tok-1"]
    assert studio.subprotocols == ["studio-worker-v1"]
    hello = seen["hello"]
    assert hello["authToken"] == "tok-1"
    caps = hello["capabilities"]
    assert caps["engine"] == "multi" and caps["autoEnabled"] is True
    assert caps["taskKinds"] == [k.value for k in TaskKind]
    assert "userPresence" not in caps
    assert "currentJobId" not in seen["heartbeat"]
    assert seen["close"] == (1000, "session ended")


async def test_no_heartbeat_before_welcome(studio: ScriptedStudio, tmp_path: Path) -> None:
    daemon = approved_daemon(tmp_path, studio.url)
    early: list[str] = []

    async def script(conn: ServerConnection) -> None:
        assert (await recv_json(conn))["type"] == "hello"
        try:
            async with asyncio.timeout(0.8):  # four heartbeat periods
                early.append((await recv_json(conn))["type"])
        except TimeoutError:
            pass
        await conn.send(json.dumps({"type": "welcome", "workerId": "w1", "serverTime": "t"}))
        await recv_type(conn, "heartbeat")
        daemon.stop.set()
        await conn.wait_closed()

    studio.script = script
    assert await run_daemon(daemon) == EXIT_OK
    assert early == []


async def test_bare_4001_close_is_terminal(
    studio: ScriptedStudio, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async def script(conn: ServerConnection) -> None:
        await welcome(conn)
        await conn.close(4001, "token revoked")

    studio.script = script
    assert await run_daemon(approved_daemon(tmp_path, studio.url)) == EXIT_AUTH_FAILED
    assert studio.connections == 1
    assert "ws auth failed: server closed 4001: token revoked" in caplog.text
    assert "studio-worker register --reset" in caplog.text


async def test_401_on_upgrade_is_terminal(
    studio: ScriptedStudio, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    studio.reject_upgrade_with = 401
    assert await run_daemon(approved_daemon(tmp_path, studio.url)) == EXIT_AUTH_FAILED
    assert "401 on websocket upgrade" in caplog.text
    assert "tok-1" not in caplog.text


async def test_auth_failed_error_before_welcome(studio: ScriptedStudio, tmp_path: Path) -> None:
    closes: list[tuple[int | None, str | None]] = []

    async def script(conn: ServerConnection) -> None:
        await recv_json(conn)
        await conn.send('{"type":"error","code":"auth_failed","message":"invalid auth token"}')
        await conn.wait_closed()
        closes.append((conn.close_code, conn.close_reason))

    studio.script = script
    assert await run_daemon(approved_daemon(tmp_path, studio.url)) == EXIT_AUTH_FAILED
    assert closes == [(1000, "auth failed")]


async def test_fatal_error_after_welcome(studio: ScriptedStudio, tmp_path: Path) -> None:
    async def script(conn: ServerConnection) -> None:
        await welcome(conn)
        await conn.send('{"type":"error","code":"worker_deleted","message":"gone"}')
        await conn.wait_closed()

    studio.script = script
    assert await run_daemon(approved_daemon(tmp_path, studio.url)) == EXIT_FATAL


async def test_other_upgrade_status_reconnects(
    studio: ScriptedStudio, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    studio.reject_upgrade_with = 503
    daemon = approved_daemon(tmp_path, studio.url)
    task = asyncio.create_task(run_daemon(daemon))
    while len(studio.auth_headers) < 3:
        await asyncio.sleep(0.05)
    daemon.stop.set()
    assert await task == EXIT_OK
    assert "HTTP 503 on websocket upgrade: go away" in caplog.text
    assert "reconnect attempt 2 in 2000ms" in caplog.text


async def test_malformed_and_unknown_frames_are_logged_and_the_session_recovers(
    studio: ScriptedStudio, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    daemon = approved_daemon(tmp_path, studio.url)
    got: dict[str, Any] = {}

    async def script(conn: ServerConnection) -> None:
        await welcome(conn)
        await conn.send("{not json")
        await conn.send('{"type":"teleport","where":"mars"}')
        await conn.send(b"\x00binary")
        await conn.send(offer("j1", LLM))
        got["accept"] = await recv_type(conn, "accept")
        got["result"] = await recv_type(conn, "completeJson")
        daemon.stop.set()
        await conn.wait_closed()

    studio.script = script
    assert await run_daemon(daemon) == EXIT_OK
    assert studio.connections == 1  # never torn down
    assert got["accept"] == {"type": "accept", "jobId": "j1"}
    assert got["result"]["prompt"] == "hi"
    assert got["result"]["result"]["model"] == "synthetic-llm"
    assert "frame is not JSON" in caplog.text and "teleport" in caplog.text


async def test_unreadable_offer_is_failed_terminally(
    studio: ScriptedStudio, tmp_path: Path
) -> None:
    daemon = approved_daemon(tmp_path, studio.url)
    got: list[dict[str, Any]] = []

    async def script(conn: ServerConnection) -> None:
        await welcome(conn)
        await conn.send('{"type":"offer","claim":{"jobId":"bad1","task":{"kind":"hologram"}}}')
        got.append(await recv_type(conn, "accept"))
        got.append(await recv_type(conn, "fail"))
        daemon.stop.set()
        await conn.wait_closed()

    studio.script = script
    assert await run_daemon(daemon) == EXIT_OK
    assert got[1]["jobId"] == "bad1" and got[1]["retryable"] is False
    assert got[1]["error"].startswith("unreadable offer:")


async def test_paused_worker_rejects_and_advertises_it(
    studio: ScriptedStudio, tmp_path: Path
) -> None:
    daemon = approved_daemon(tmp_path, studio.url, paused=True)
    got: dict[str, Any] = {}

    async def script(conn: ServerConnection) -> None:
        hello = await welcome(conn)
        got["autoEnabled"] = hello["capabilities"]["autoEnabled"]
        await conn.send(offer("j1", LLM))
        got["reject"] = await recv_type(conn, "reject")
        # `studio-worker enable` while running: picked up without a restart.
        ConfigStore(daemon.config_path).update(paused=False)
        while True:
            beat = await recv_type(conn, "heartbeat")
            if beat["capabilities"]["autoEnabled"]:
                break
        await conn.send(offer("j2", LLM))
        got["accept"] = await recv_type(conn, "accept")
        batch = await recv_type(conn, "logBatch")
        got["logs"] = [e["message"] for e in batch["entries"]]
        daemon.stop.set()
        await conn.wait_closed()

    studio.script = script
    assert await run_daemon(daemon) == EXIT_OK
    assert got["autoEnabled"] is False
    assert got["reject"] == {
        "type": "reject",
        "jobId": "j1",
        "reason": "worker paused by operator",
        "code": "paused",
    }
    assert got["accept"]["jobId"] == "j2"


class SlowEngine:
    """A scripted engine that holds the slot until released."""

    name = "synthetic"

    def __init__(self) -> None:
        self.release = threading.Event()

    def models_per_kind(self) -> Mapping[TaskKind, list[str]]:
        return SyntheticEngine().models_per_kind()

    def run(
        self,
        claim: JobOfferClaim,
        model_paths: Mapping[str, Path],
        progress: Any,
        cancel: threading.Event,
    ) -> JobResult:
        self.release.wait(10)
        return JsonResult({"text": "slow", "language": "en", "duration": 1.0})


async def test_busy_worker_rejects_a_second_offer_and_heartbeats_the_job(
    studio: ScriptedStudio, tmp_path: Path
) -> None:
    engine = SlowEngine()
    daemon = approved_daemon(tmp_path, studio.url, engines=EngineRegistry([engine]))
    got: dict[str, Any] = {}

    async def script(conn: ServerConnection) -> None:
        await welcome(conn)
        await conn.send(offer("j1", {"kind": "audio_stt", "inputUrl": "https://a/b.wav"}))
        await recv_type(conn, "accept")
        await conn.send(offer("j2", LLM))
        got["reject"] = await recv_type(conn, "reject")
        while True:
            beat = await recv_type(conn, "heartbeat")
            if beat.get("currentJobId"):
                got["current"] = beat["currentJobId"]
                break
        engine.release.set()
        got["done"] = await recv_type(conn, "completeJson")
        daemon.stop.set()
        await conn.wait_closed()

    studio.script = script
    assert await run_daemon(daemon) == EXIT_OK
    assert got["reject"] == {
        "type": "reject",
        "jobId": "j2",
        "reason": "worker already has an in-flight job",
        "code": "busy",
    }
    assert got["current"] == "j1"
    assert got["done"]["jobId"] == "j1" and got["done"]["prompt"] == "https://a/b.wav"


async def test_unknown_and_missing_engines_fail_with_the_right_retryable(
    studio: ScriptedStudio, tmp_path: Path
) -> None:
    # A worker built without the llama engine (only the synthetic one).
    daemon = approved_daemon(tmp_path, studio.url, engines=EngineRegistry([SyntheticEngine()]))
    fails: list[dict[str, Any]] = []

    async def script(conn: ServerConnection) -> None:
        await welcome(conn)
        await conn.send(offer("j1", LLM, engine="llama-cpp"))
        fails.append(await recv_type(conn, "fail"))
        await conn.send(offer("j2", LLM, engine="warp-drive"))
        fails.append(await recv_type(conn, "fail"))
        daemon.stop.set()
        await conn.wait_closed()

    studio.script = script
    assert await run_daemon(daemon) == EXIT_OK
    assert fails[0]["retryable"] is True and "no `llama` engine installed" in fails[0]["error"]
    assert fails[1]["retryable"] is False and "unknown engine `warp-drive`" in fails[1]["error"]


async def test_result_waits_in_the_outbox_across_a_reconnect(
    studio: ScriptedStudio, tmp_path: Path
) -> None:
    engine = SlowEngine()
    daemon = approved_daemon(tmp_path, studio.url, engines=EngineRegistry([engine]))
    got: dict[str, Any] = {}

    async def script(conn: ServerConnection) -> None:
        if studio.connections == 1:
            await welcome(conn)
            await conn.send(offer("j1", {"kind": "audio_stt", "inputUrl": "https://a/b.wav"}))
            await recv_type(conn, "accept")
            await conn.close(1012, "studio restarting")  # the job keeps running
            return
        await welcome(conn)
        engine.release.set()
        got["done"] = await recv_type(conn, "completeJson")
        daemon.stop.set()
        await conn.wait_closed()

    studio.script = script
    assert await run_daemon(daemon) == EXIT_OK
    assert studio.connections == 2
    assert got["done"]["jobId"] == "j1"
