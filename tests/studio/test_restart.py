"""Persistence across restarts, and the studio as a separate process (`python -m`)."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
from pathlib import Path

import httpx

from studio_worker.studio import JobStatus, StudioServer

from .peers import ADMIN, LLM_TASK, Peer, expect, send


async def test_restart_keeps_workers_and_holds_running_jobs_for_their_worker(
    tmp_path: Path,
) -> None:
    data = tmp_path / "studio"
    first = StudioServer(data, admin_token=ADMIN)
    await first.start()
    assert first.url is not None
    async with httpx.AsyncClient(base_url=first.url) as http:
        peer = Peer(first, first.url, http)
        worker_id, token, ws = await peer.worker_session()
        running = first.submit_job("llm", LLM_TASK)
        await expect(ws, "offer")
        await send(ws, {"type": "accept", "jobId": running})
        await first.jobs.wait_for(running, 5, statuses=(JobStatus.RUNNING,))
        offered = first.submit_job("llm", LLM_TASK)  # offered to nobody: the worker is busy
        waiting = first.submit_job("image", {"kind": "image", "prompt": "x"}, vram_gb_estimate=99)
    await first.stop()

    second = StudioServer(data, admin_token=ADMIN)
    await second.start()
    try:
        # The running job stays with its worker, which may deliver it after reconnecting
        # (a result for a job the studio no longer held would be a protocol violation).
        job = second.get_job(running)
        assert job is not None and (job.status, job.worker_id) == ("running", worker_id)
        assert job.attempts == 0
        for other in (offered, waiting):
            still = second.get_job(other)
            assert still is not None and still.status == "queued"
        assert second.url is not None
        async with httpx.AsyncClient(base_url=second.url) as http:
            ws2 = await Peer(second, second.url, http).session(worker_id, token)
            result = {"object": "chat.completion", "choices": []}
            await send(ws2, {"type": "completeJson", "jobId": running, "result": result})
            assert (await expect(ws2, "completeAck"))["jobId"] == running
            done = await second.wait_for_job(running, 5)
            assert (done.status, done.result) == ("done", result)
            assert second.jobs.deliveries == {running: 1}
            await ws2.close()
    finally:
        await second.stop()


async def test_a_running_job_whose_worker_never_returns_is_requeued_by_the_sweep(
    tmp_path: Path,
) -> None:
    data = tmp_path / "studio"
    first = StudioServer(data, admin_token=ADMIN)
    await first.start()
    assert first.url is not None
    async with httpx.AsyncClient(base_url=first.url) as http:
        _, _, ws = await Peer(first, first.url, http).worker_session()
        running = first.submit_job("llm", LLM_TASK)
        await expect(ws, "offer")
        await send(ws, {"type": "accept", "jobId": running})
        await first.jobs.wait_for(running, 5, statuses=(JobStatus.RUNNING,))
    await first.stop()

    second = StudioServer(data, admin_token=ADMIN, sweep_every_s=0.05, stale_after_s=0.2)
    await second.start()
    try:
        job = await second.jobs.wait_for(running, 10, statuses=(JobStatus.QUEUED,))
        assert job.attempts == 1 and job.worker_id is None
        assert job.error == "worker disconnected"
    finally:
        await second.stop()


async def test_module_entry_point_serves_and_stops_on_sigterm(tmp_path: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "studio_worker.studio",
        "--data-dir",
        str(tmp_path / "d"),
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.DEVNULL,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    try:
        assert proc.stdout is not None
        line = (await asyncio.wait_for(proc.stdout.readline(), 20)).decode().strip()
        assert line.startswith("studio listening on http://127.0.0.1:")
        url = line.removeprefix("studio listening on ")
        token_file = tmp_path / "d" / "admin-token"
        assert token_file.stat().st_mode & 0o777 == 0o600
        token = token_file.read_text().strip()
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/healthz")).json() == {"ok": True}
            listed = await http.get("/admin/workers", headers={"Authorization": f"Bearer {token}"})
            assert listed.status_code == 200 and listed.json() == []
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
