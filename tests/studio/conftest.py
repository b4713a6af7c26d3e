"""Fixtures for the studio tests: a real studio on 127.0.0.1 port 0 and real peers."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from studio_worker.studio import StudioServer

from .peers import ADMIN, Peer


@pytest.fixture
def studio_kwargs() -> dict[str, Any]:
    return {}


@pytest.fixture
async def studio(tmp_path: Path, studio_kwargs: dict[str, Any]) -> AsyncIterator[StudioServer]:
    server = StudioServer(tmp_path / "studio", admin_token=ADMIN, **studio_kwargs)
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
async def peer(studio: StudioServer) -> AsyncIterator[Peer]:
    assert studio.url is not None
    async with httpx.AsyncClient(base_url=studio.url, timeout=10) as http:
        yield Peer(studio, studio.url, http)


@pytest.fixture
async def admin(studio: StudioServer) -> AsyncIterator[httpx.AsyncClient]:
    assert studio.url is not None
    headers = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=studio.url, headers=headers, timeout=10) as http:
        yield http
