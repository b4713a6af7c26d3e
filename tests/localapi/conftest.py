"""A real daemon against the in-process self-hosted studio, with its local API up."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from studio_worker.app import Daemon, DaemonTuning
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.session.attempt import Timing
from studio_worker.studio.server import StudioServer

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from fixtures.tiny_models import write_tiny_gguf  # noqa: E402

LLM_MODEL = "tiny-llama"


@dataclass
class Rig:
    studio: StudioServer
    daemon: Daemon
    config: Path
    models_root: Path
    url: str
    token: str
    http: httpx.AsyncClient

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    async def get(self, path: str, **kw: Any) -> httpx.Response:
        return await self.http.get(path, headers={**self.auth, **kw.pop("headers", {})}, **kw)

    async def post(self, path: str, **kw: Any) -> httpx.Response:
        return await self.http.post(path, headers={**self.auth, **kw.pop("headers", {})}, **kw)

    async def put(self, path: str, **kw: Any) -> httpx.Response:
        return await self.http.put(path, headers={**self.auth, **kw.pop("headers", {})}, **kw)

    async def delete(self, path: str, **kw: Any) -> httpx.Response:
        return await self.http.delete(path, headers={**self.auth, **kw.pop("headers", {})}, **kw)


@pytest.fixture(scope="session")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf", reason="gguf is not installed")
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture
async def rig(
    tmp_path: Path, tiny_gguf: Path, caplog: pytest.LogCaptureFixture
) -> AsyncIterator[Rig]:
    caplog.set_level(logging.INFO)  # the daemon's own level (`setup_logging`)
    studio = StudioServer(tmp_path / "studio")
    shutil.copy(tiny_gguf, studio.shelf.root / "tiny.gguf")
    base_url = await studio.start()
    config = tmp_path / "worker" / "config.toml"
    models_root = tmp_path / "models"
    cached = models_root / "llama-cpp" / LLM_MODEL
    cached.mkdir(parents=True)
    shutil.copy(tiny_gguf, cached / "tiny.gguf")
    ConfigStore(config).save(
        Settings(
            api_base_url=base_url,
            models_root=models_root,
            auto_update_enabled=False,
            local_api_port=0,  # ephemeral: tests run side by side
        )
    )
    tuning = DaemonTuning(registration_tick_s=0.2, timing=Timing(heartbeat_s=0.5))
    daemon = Daemon(config, tuning=tuning)
    worker = asyncio.create_task(daemon.run())
    discovery = config.parent / "local-api.json"
    try:
        async with asyncio.timeout(30):
            while not studio.pending_requests():
                await asyncio.sleep(0.05)
            while not discovery.exists():
                await asyncio.sleep(0.05)
        studio.approve(studio.pending_requests()[0].id)
        async with asyncio.timeout(30):
            while daemon.status.snapshot().session_state.value != "connected":
                await asyncio.sleep(0.05)
        found = json.loads(discovery.read_text())
        async with httpx.AsyncClient(base_url=found["url"], timeout=60) as http:
            yield Rig(studio, daemon, config, models_root, found["url"], found["token"], http)
    finally:
        daemon.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker, 20)
        await studio.stop()


async def wait_until(check: Any, what: str, timeout: float = 20) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.05)
