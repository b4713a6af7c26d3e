"""The worker WebSocket: upgrade auth, hello/welcome gate, close codes (protocol §3)."""

from __future__ import annotations

import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from studio_worker.studio import StudioServer
from studio_worker.studio import ws as ws_module

from .peers import LLM_TASK, Peer, caps, expect, recv, send


async def closed_code(ws: object) -> int:
    """Read until the socket closes; returns the close code the studio sent."""
    from websockets.asyncio.client import ClientConnection

    assert isinstance(ws, ClientConnection)
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await recv(ws)
    assert info.value.rcvd is not None
    return info.value.rcvd.code


async def test_full_json_job_round_trip(peer: Peer, studio: StudioServer) -> None:
    worker_id, token = await peer.approved_worker()
    ws = await peer.open(worker_id, token)
    assert ws.subprotocol == "studio-worker-v1"
    await send(ws, {"type": "hello", "authToken": token, "capabilities": caps()})
    welcome = await recv(ws)
    assert welcome["type"] == "welcome" and welcome["workerId"] == worker_id
    assert welcome["serverTime"].endswith("Z")
    await send(ws, {"type": "heartbeat", "capabilities": caps()})
    assert (await recv(ws)) == {"type": "heartbeatAck"}

    job_id = studio.submit_job("llm", LLM_TASK, "synthetic-llm", game_id="g1")
    offer = await expect(ws, "offer")
    claim = offer["claim"]
    assert claim["jobId"] == job_id and claim["gameId"] == "g1"
    assert claim["task"]["kind"] == "llm" and claim["modelSource"]["engine"] == "synthetic"
    assert claim["modelSource"]["cliDefaults"]["steps"] == 0

    await send(ws, {"type": "accept", "jobId": job_id})
    await send(
        ws,
        {
            "type": "logBatch",
            "entries": [
                {
                    "ts": "2026-10-07T09:14:03.512Z",
                    "level": "info",
                    "category": "ws",
                    "message": "offer received",
                    "jobId": job_id,
                },
            ],
        },
    )
    result = {"object": "chat.completion", "choices": [], "nested": None}
    await send(
        ws, {"type": "completeJson", "jobId": job_id, "result": result, "prompt": "Name three"}
    )
    assert (await expect(ws, "completeAck")) == {"type": "completeAck", "jobId": job_id}
    job = await studio.wait_for_job(job_id, 5)
    assert job.status == "done" and job.result == result and job.prompt == "Name three"
    assert job.worker_id == worker_id
    assert [e.message for e in studio.worker_logs(worker_id)] == ["offer received"]
    await ws.close()


async def test_bad_upgrade_token_is_plain_401(peer: Peer) -> None:
    worker_id, _token = await peer.approved_worker()
    with pytest.raises(InvalidStatus) as info:
        await peer.open(worker_id, "wrong")
    assert info.value.response.status_code == 401


async def test_heartbeat_before_hello_is_4002(peer: Peer) -> None:
    worker_id, token = await peer.approved_worker()
    ws = await peer.open(worker_id, token)
    await send(ws, {"type": "heartbeat", "capabilities": caps()})
    error = await recv(ws)
    assert error["type"] == "error" and error["code"] == "protocol_violation"
    assert await closed_code(ws) == 4002


async def test_hello_with_bad_token_is_auth_failed(peer: Peer) -> None:
    worker_id, token = await peer.approved_worker()
    ws = await peer.open(worker_id, token)
    await send(ws, {"type": "hello", "authToken": "nope", "capabilities": caps()})
    error = await recv(ws)
    assert error == {"type": "error", "code": "auth_failed", "message": "invalid auth token"}
    assert await closed_code(ws) == 4001


async def test_a_new_connection_is_welcomed_without_waiting_for_a_dead_older_one(
    peer: Peer, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The older socket's peer is gone (half-open): it will never answer the close.
    monkeypatch.setattr(ws_module, "CLOSE_TIMEOUT_S", 60.0)
    worker_id, token = await peer.approved_worker()
    first = await peer.session(worker_id, token)
    first.transport.pause_reading()
    second = await peer.session(worker_id, token)  # welcomed within recv's 5 s deadline
    await send(second, {"type": "heartbeat", "capabilities": caps()})
    assert (await expect(second, "heartbeatAck"))["type"] == "heartbeatAck"
    await second.close()
    first.transport.abort()


async def test_second_connection_closes_the_first_with_4003(peer: Peer) -> None:
    worker_id, token = await peer.approved_worker()
    first = await peer.session(worker_id, token)
    second = await peer.session(worker_id, token)
    error = await expect(first, "error")
    assert error["code"] == "duplicate_worker"
    assert await closed_code(first) == 4003
    await send(second, {"type": "heartbeat", "capabilities": caps()})
    assert (await expect(second, "heartbeatAck"))["type"] == "heartbeatAck"
    await second.close()


async def test_revoke_closes_with_bare_4001(peer: Peer, studio: StudioServer) -> None:
    worker_id, token = await peer.approved_worker()
    ws = await peer.session(worker_id, token)
    await expect(ws, "heartbeatAck")
    await studio.revoke(worker_id)
    assert await closed_code(ws) == 4001  # no error frame came first
    with pytest.raises(InvalidStatus):
        await peer.open(worker_id, token)


async def test_delete_closes_with_worker_deleted_4004(peer: Peer, studio: StudioServer) -> None:
    worker_id, token = await peer.approved_worker()
    ws = await peer.session(worker_id, token)
    await expect(ws, "heartbeatAck")
    await studio.delete_worker(worker_id)
    error = await expect(ws, "error")
    assert error["code"] == "worker_deleted"
    assert await closed_code(ws) == 4004


async def test_frames_for_a_job_not_held_are_4002(peer: Peer, studio: StudioServer) -> None:
    _wid, _token, ws = await peer.worker_session(taskKinds=[])
    job_id = studio.submit_job("llm", LLM_TASK)
    await send(ws, {"type": "completeJson", "jobId": job_id, "result": {}})
    error = await expect(ws, "error")
    assert error["code"] == "protocol_violation"
    assert await closed_code(ws) == 4002
    job = studio.get_job(job_id)
    assert job is not None and job.status == "queued"


async def test_unknown_frame_is_4002(peer: Peer) -> None:
    _wid, _token, ws = await peer.worker_session()
    await send(ws, {"type": "dance"})
    assert (await expect(ws, "error"))["code"] == "protocol_violation"
    assert await closed_code(ws) == 4002
