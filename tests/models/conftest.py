"""A file server on loopback with real Range support that can be told to misbehave."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import random
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web

from studio_worker.domain.tasks import ModelFile, ModelSource

_RANGE = re.compile(r"^bytes=(\d+)-$")


def blob(size: int, seed: int = 7) -> bytes:
    return random.Random(seed).randbytes(size)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


@dataclass
class FileServer:
    """Serves `files` at `/f/<name>`. Each request takes the next entry of `plan`
    (default "ok"): the test scripts what the n-th request sees.

    Plan entries: "ok"; ("cut", n) sends n body bytes then drops the connection;
    ("stall", n) sends n bytes then goes silent until released; ("status", code);
    "wrong" sends other bytes of the same length; "ignore-range" answers 200 with the
    whole file; "416" answers 416 (no Content-Range); ("bad-range", start) answers 206
    claiming another start; "lie-total" answers 206 with a total 100 bytes too big;
    ("slow", pieces, pause) sends the body in pieces with pauses between them.
    """

    files: dict[str, bytes] = field(default_factory=dict)
    plan: list[Any] = field(default_factory=list)
    seen: list[dict[str, str | None]] = field(default_factory=list)
    url: str = ""
    release: asyncio.Event = field(default_factory=asyncio.Event)

    def file_url(self, name: str) -> str:
        return f"{self.url}/f/{name}"

    def source(
        self,
        *names: str,
        engine: str = "sd-cpp",
        with_sha: bool = True,
        approx: bool = False,
    ) -> ModelSource:
        return ModelSource(
            engine=engine,
            files=[
                ModelFile(
                    role="model",
                    url=self.file_url(name),
                    filename=name,
                    sha256=sha(self.files[name]) if with_sha else None,
                    approx_bytes=len(self.files[name]) if approx else None,
                )
                for name in names
            ],
        )

    def ranges(self) -> list[str | None]:
        return [s["range"] for s in self.seen]

    async def handle(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        self.seen.append(
            {
                "path": request.path,
                "range": request.headers.get("Range"),
                "ua": request.headers.get("User-Agent"),
            }
        )
        step = self.plan.pop(0) if self.plan else "ok"
        if name not in self.files:
            return web.Response(status=404, text="no such file")
        data = self.files[name]
        kind, arg = (step, None) if isinstance(step, str) else (step[0], step[1:])
        if kind == "status":
            return web.Response(status=arg[0], text="scripted")
        if kind == "416":
            return web.Response(status=416)
        if kind == "wrong":
            data = bytes(b ^ 0xFF for b in data)

        match = _RANGE.match(request.headers.get("Range") or "")
        start = int(match.group(1)) if match and kind != "ignore-range" else None
        if start is not None and start >= len(data):
            return web.Response(status=416, headers={"Content-Range": f"bytes */{len(data)}"})
        body = data[start or 0 :]
        headers = {"Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        status = 200
        if start is not None:
            status = 206
            first = start
            total = len(data) + (100 if kind == "lie-total" else 0)
            if kind == "bad-range":
                first = arg[0]
            headers["Content-Range"] = f"bytes {first}-{len(data) - 1}/{total}"
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(body)
        await response.prepare(request)
        if kind in ("cut", "stall"):
            await response.write(body[: arg[0]])
            if kind == "stall":
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.release.wait(), timeout=5)
            assert request.transport is not None
            request.transport.close()
            return response
        if kind == "slow":
            pieces, pause = arg
            step_size = -(-len(body) // pieces)
            for offset in range(0, len(body), step_size):
                await response.write(body[offset : offset + step_size])
                await asyncio.sleep(pause)
        else:
            await response.write(body)
        await response.write_eof()
        return response

    async def redirect(self, request: web.Request) -> web.StreamResponse:
        self.seen.append({"path": request.path, "range": request.headers.get("Range")})
        target = request.query.get("to") or f"/f/{request.match_info['name']}"
        raise web.HTTPFound(target)


@pytest.fixture
async def server() -> AsyncIterator[FileServer]:
    state = FileServer()
    app = web.Application()
    app.router.add_get("/f/{name}", state.handle)
    app.router.add_get("/r/{name}", state.redirect)
    runner = web.AppRunner(app, shutdown_timeout=1)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    state.url = f"http://127.0.0.1:{port}"
    yield state
    state.release.set()
    await runner.cleanup()
