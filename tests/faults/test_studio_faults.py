"""The studio process is killed (`kill -9`) and restarted while a job runs on the worker:
the result is delivered after the reconnect, once."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path
from typing import Any

import httpx
from processes import ADMIN_TOKEN, StudioProcess
from rig import GATED_SOURCE, GATED_TASK, TUNING, GatedEngine

from studio_worker.app import Daemon
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.engines.registry import EngineRegistry
from studio_worker.engines.synthetic import SyntheticEngine

ADMIN = ADMIN_TOKEN  # the studio processes.StudioProcess starts
LIMIT_S = 20.0


async def admin(url: str, method: str, path: str, body: Any = None) -> Any:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.request(
            method, path, json=body, headers={"Authorization": f"Bearer {ADMIN}"}
        )
        response.raise_for_status()
        return response.json()


async def until_job(url: str, job_id: str, *statuses: str) -> dict[str, Any]:
    async with asyncio.timeout(LIMIT_S):
        while True:
            with contextlib.suppress(httpx.HTTPError):
                job: dict[str, Any] = await admin(url, "GET", f"/admin/jobs/{job_id}")
                if job["status"] in statuses:
                    return job
            await asyncio.sleep(0.05)


async def test_studio_killed_and_restarted_mid_job_gets_the_result_once(tmp_path: Path) -> None:
    studio = StudioProcess(tmp_path / "studio")
    config = tmp_path / "worker" / "config.toml"
    ConfigStore(config).save(
        Settings(
            api_base_url=studio.url, models_root=tmp_path / "models", auto_update_enabled=False
        )
    )
    engine = GatedEngine()
    daemon = Daemon(
        config,
        tuning=TUNING,
        engines=EngineRegistry([engine, SyntheticEngine()]),
    )
    worker = asyncio.create_task(daemon.run())
    try:
        async with asyncio.timeout(LIMIT_S):
            while not (pending := await admin(studio.url, "GET", "/admin/requests?status=pending")):
                await asyncio.sleep(0.05)
        await admin(studio.url, "POST", f"/admin/requests/{pending[0]['requestId']}/approve", {})
        body = {"kind": "llm", "task": GATED_TASK, "model": "gated", "modelSource": GATED_SOURCE}
        job_id = (await admin(studio.url, "POST", "/admin/jobs", body))["jobId"]
        await until_job(studio.url, job_id, "running")
        async with asyncio.timeout(LIMIT_S):
            while not engine.started.is_set():
                await asyncio.sleep(0.01)

        studio.kill9()  # mid-job, no goodbye of any kind
        studio = StudioProcess(tmp_path / "studio", port=studio.port)
        # The restarted studio still gives the job to the worker that ran it.
        held = await admin(studio.url, "GET", f"/admin/jobs/{job_id}")
        assert held["status"] == "running" and held["attempts"] == 0
        engine.release.set()
        job = await until_job(studio.url, job_id, "done", "failed")
        assert (job["status"], job["attempts"], job["deliveries"]) == ("done", 0, 1)
        assert engine.runs == 1
        assert not worker.done()  # a protocol violation would have ended the worker
    finally:
        engine.release.set()
        daemon.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker, 20)
        studio.stop()
