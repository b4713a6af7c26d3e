"""The admin HTTP API and the `studio` CLI commands that drive it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
from click.testing import CliRunner, Result

from studio_worker.studio import StudioServer
from studio_worker.studio.commands import studio_group

from .peers import ADMIN, LLM_TASK, Peer, expect, send


async def test_admin_routes_need_the_token(studio: StudioServer) -> None:
    assert studio.url is not None
    async with httpx.AsyncClient(base_url=studio.url) as http:
        assert (await http.get("/healthz")).status_code == 200
        for method, path in [
            ("GET", "/admin/requests"),
            ("GET", "/admin/workers"),
            ("GET", "/admin/jobs"),
            ("POST", "/admin/jobs"),
            ("POST", "/admin/requests/rr-x/approve"),
            ("DELETE", "/admin/workers/w_x"),
        ]:
            r = await http.request(method, path)
            assert r.status_code == 401, path
            r = await http.request(method, path, headers={"Authorization": "Bearer wrong"})
            assert r.status_code == 401, path


async def test_admin_registration_and_workers(peer: Peer, admin: httpx.AsyncClient) -> None:
    request_id, secret = await peer.register()
    listed = (await admin.get("/admin/requests?status=pending")).json()
    assert [r["requestId"] for r in listed] == [request_id]
    approved = await admin.post(f"/admin/requests/{request_id}/approve")
    worker_id = approved.json()["workerId"]
    assert (await peer.poll(request_id, secret)).json()["workerId"] == worker_id

    other, other_secret = await peer.register()
    assert (await admin.post(f"/admin/requests/{other}/reject", json={"reason": "no"})).is_success
    assert (await peer.poll(other, other_secret)).json() == {"status": "rejected", "reason": "no"}
    assert (await admin.post(f"/admin/requests/{other}/approve")).status_code == 409
    assert (await admin.post("/admin/requests/rr-missing/approve")).status_code == 404

    workers = (await admin.get("/admin/workers")).json()
    assert [(w["workerId"], w["connected"]) for w in workers] == [(worker_id, False)]
    assert (await admin.post(f"/admin/workers/{worker_id}/revoke")).is_success
    assert (await admin.delete(f"/admin/workers/{worker_id}")).is_success
    assert (await admin.get("/admin/workers")).json() == []


async def test_admin_jobs(peer: Peer, admin: httpx.AsyncClient) -> None:
    bad = await admin.post("/admin/jobs", json={"kind": "llm", "task": {}, "model": "m"})
    assert bad.status_code == 400 and "messages" in bad.json()["error"]
    wrong = await admin.post(
        "/admin/jobs", json={"kind": "painting", "task": {"prompt": "x"}, "model": "m"}
    )
    assert wrong.status_code == 400 and "unknown kind" in wrong.json()["error"]

    worker_id, _token, ws = await peer.worker_session()
    created = await admin.post(
        "/admin/jobs", json={"kind": "llm", "task": LLM_TASK, "model": "synthetic-llm"}
    )
    assert created.status_code == 201
    job_id = created.json()["jobId"]
    offer = await expect(ws, "offer")
    assert offer["claim"]["modelSource"]["engine"] == "synthetic"
    await send(ws, {"type": "accept", "jobId": job_id})
    entry = {"ts": "2026-10-07T09:14:03.512Z", "level": "warn", "category": "ws", "message": "m"}
    await send(ws, {"type": "logBatch", "entries": [entry]})
    await send(ws, {"type": "completeJson", "jobId": job_id, "result": {"text": "hi"}})
    await expect(ws, "completeAck")

    job = (await admin.get(f"/admin/jobs/{job_id}")).json()
    assert job["status"] == "done" and job["workerId"] == worker_id
    assert (await admin.get(f"/admin/jobs/{job_id}/result")).json() == {"text": "hi"}
    assert [j["jobId"] for j in (await admin.get("/admin/jobs?status=done")).json()] == [job_id]
    assert (await admin.get("/admin/jobs/job_nope")).status_code == 404
    assert (await admin.get(f"/admin/workers/{worker_id}/logs")).json() == [entry]
    await ws.close()


async def cli(*args: str) -> Result:
    """Run a `studio` command in a thread (it makes blocking HTTP calls to our loop)."""
    runner = CliRunner()
    return await asyncio.to_thread(runner.invoke, studio_group, list(args))


async def test_cli_drives_a_running_studio(peer: Peer, studio: StudioServer) -> None:
    assert studio.url is not None
    common = ["--url", studio.url, "--admin-token", ADMIN]
    request_id, secret = await peer.register()

    listed = await cli("requests", *common)
    assert listed.exit_code == 0 and request_id in listed.output
    approved = await cli("approve", request_id, *common)
    assert approved.exit_code == 0, approved.output
    body = (await peer.poll(request_id, secret)).json()
    worker_id, token = body["workerId"], body["authToken"]
    ws = await peer.session(worker_id, token)

    submitted = await cli("submit", "llm", "--prompt", "Name three dragons.", *common)
    assert submitted.exit_code == 0, submitted.output
    job_id = submitted.output.strip()
    offer = await expect(ws, "offer")
    claim: dict[str, Any] = offer["claim"]
    assert claim["jobId"] == job_id
    assert claim["task"]["messages"][-1]["content"] == "Name three dragons."

    assert job_id in (await cli("jobs", *common)).output
    assert '"status": "offered"' in (await cli("job", job_id, *common)).output
    assert worker_id in (await cli("workers", *common)).output
    assert (await cli("logs", worker_id, *common)).exit_code == 0
    assert (await cli("submit", "audio_stt", *common)).exit_code != 0
    assert (await cli("revoke", worker_id, *common)).exit_code == 0
    assert (await cli("delete-worker", worker_id, *common)).exit_code == 0
    await ws.close()


async def test_cli_reports_an_unreachable_studio_cleanly(tmp_path: Path) -> None:
    result = await cli(
        "jobs", "--url", "http://127.0.0.1:9", "--admin-token", "t", "--data-dir", str(tmp_path)
    )
    assert result.exit_code == 1
    assert "cannot reach the studio" in result.output
    assert result.exception is None or isinstance(result.exception, SystemExit)
    missing = await cli("jobs", "--url", "http://127.0.0.1:9", "--data-dir", str(tmp_path))
    assert missing.exit_code == 1 and "no admin token" in missing.output
