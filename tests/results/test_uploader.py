"""The multipart upload against a real HTTP server on loopback."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from aiohttp import web

from studio_worker.domain.results import BinaryResult
from studio_worker.protocol.urls import StudioLink
from studio_worker.results.uploader import NotHeld, ResultUploader, UploadError


@dataclass
class Studio:
    statuses: list[int]
    seen: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""

    async def handle(self, request: web.Request) -> web.Response:
        reader = await request.multipart()
        parts = []
        async for part in reader:
            parts.append(
                (part.name, part.filename, part.headers.get("Content-Type"), await part.read())
            )
        self.seen.append(
            {"path": request.path, "auth": request.headers.get("Authorization"), "parts": parts}
        )
        status = self.statuses.pop(0) if self.statuses else 200
        body = "boom" if status >= 400 else '{"ok":true}'
        return web.Response(status=status, text=body)


@pytest.fixture
async def studio() -> AsyncIterator[Studio]:
    state = Studio(statuses=[])
    app = web.Application()
    app.router.add_post("/graphics/api/workers/{w}/jobs/{j}/complete", state.handle)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    await runner.cleanup()


async def upload(studio: Studio, sleeps: list[float]) -> None:
    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)

    async with httpx.AsyncClient() as http:
        uploader = ResultUploader(http, sleep=fake_sleep)
        await uploader.upload(
            StudioLink(studio.url, "w1", "tok"),
            "job1",
            "the full prompt",
            BinaryResult(b"RIFF....WEBP", "webp"),
        )


async def test_parts_in_order_with_filename_and_mime(studio: Studio) -> None:
    await upload(studio, [])
    (seen,) = studio.seen
    assert seen["path"] == "/graphics/api/workers/w1/jobs/job1/complete"
    assert seen["auth"] == "Bearer tok"
    names = [(p[0], p[1], p[2]) for p in seen["parts"]]
    assert names[0][0] == "prompt" and names[1][0] == "ext"
    assert names[2] == ("image", "job1.webp", "image/webp")
    assert seen["parts"][0][3] == b"the full prompt" and seen["parts"][2][3] == b"RIFF....WEBP"


async def test_two_5xx_then_ok(studio: Studio) -> None:
    studio.statuses = [500, 503]
    sleeps: list[float] = []
    await upload(studio, sleeps)
    assert len(studio.seen) == 3
    assert sleeps == [1.0, 2.0]


async def test_three_5xx_fail_with_the_status_line_and_body(studio: Studio) -> None:
    studio.statuses = [500, 500, 500]
    with pytest.raises(UploadError) as info:
        await upload(studio, [])
    assert info.value.retryable is True
    assert str(info.value) == "complete failed: 500 Internal Server Error — boom"
    assert len(studio.seen) == 3


async def test_4xx_is_not_retried(studio: Studio) -> None:
    studio.statuses = [409]
    with pytest.raises(UploadError, match="409 Conflict"):
        await upload(studio, [])
    assert len(studio.seen) == 1


async def test_transport_errors_are_retried() -> None:
    dead = Studio(statuses=[], url="http://127.0.0.1:9")  # nothing listens on port 9
    sleeps: list[float] = []
    with pytest.raises(UploadError, match="complete failed: ConnectError"):
        await upload(dead, sleeps)
    assert sleeps == [1.0, 2.0]


async def test_409_is_not_held_and_not_retried(studio: Studio) -> None:
    studio.statuses = [409]
    sleeps: list[float] = []
    with pytest.raises(NotHeld) as info:
        await upload(studio, sleeps)
    assert len(studio.seen) == 1 and sleeps == []
    assert info.value.retryable is True and info.value.message.startswith("complete failed: 409")
