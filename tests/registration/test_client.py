"""RegistrationClient against a real scripted studio on 127.0.0.1 (aiohttp, port 0)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import tomllib
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from studio_worker import user_agent
from studio_worker.config.errors import ConfigError
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.domain.capabilities import WorkerCapabilities
from studio_worker.protocol.registration import REJECTED_MESSAGE, Credentials, RegState
from studio_worker.registration.client import STOPPED_MESSAGE, RegistrationClient

INSTALL_ID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
Reply = tuple[int, Any]


@dataclass
class Seen:
    method: str
    path: str
    headers: dict[str, str]
    body: Any


@dataclass
class Studio:
    """Scripted answers, one per call; the last answer repeats once the script runs out."""

    posts: list[Reply] = field(default_factory=list)
    polls: list[Reply] = field(default_factory=list)
    seen: list[Seen] = field(default_factory=list)
    hang_polls: bool = False
    release: asyncio.Event = field(default_factory=asyncio.Event)
    base_url: str = ""

    @staticmethod
    def _next(script: list[Reply]) -> Reply:
        return script.pop(0) if len(script) > 1 else script[0]

    async def post(self, request: web.Request) -> web.Response:
        body = await request.json()
        self.seen.append(Seen("POST", request.path, dict(request.headers), body))
        status, payload = self._next(self.posts)
        return _reply(status, payload)

    async def poll(self, request: web.Request) -> web.Response:
        self.seen.append(Seen("GET", request.path, dict(request.headers), None))
        if self.hang_polls:
            await self.release.wait()
        status, payload = self._next(self.polls)
        return _reply(status, payload)

    @property
    def post_bodies(self) -> list[dict[str, Any]]:
        return [s.body for s in self.seen if s.method == "POST"]


def _reply(status: int, payload: Any) -> web.Response:
    if isinstance(payload, str):
        return web.Response(status=status, text=payload)
    return web.json_response(payload, status=status)


@pytest.fixture
async def studio() -> AsyncIterator[Studio]:
    state = Studio()
    app = web.Application()
    app.router.add_post("/graphics/api/workers/register-request", state.post)
    app.router.add_get("/graphics/api/workers/register-requests/{rid}", state.poll)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    state.base_url = f"http://{host}:{port}/"
    try:
        yield state
    finally:
        state.release.set()
        await runner.cleanup()


def capabilities() -> WorkerCapabilities:
    return WorkerCapabilities(
        machine_name="box",
        username="ada",
        agent_version="0.5.0",
        engine="synthetic",
        vram_total_gb=8.0,
        vram_threshold_gb=8.0,
        auto_enabled=False,  # the client must send true
        user_presence="idle",  # the client must leave it out
    )


@dataclass
class Harness:
    store: ConfigStore
    client: RegistrationClient
    states: list[dict[str, str]]


@pytest.fixture
async def make(tmp_path: Path, studio: Studio) -> AsyncIterator[Callable[..., Harness]]:
    http = httpx.AsyncClient()
    ticks = iter(range(1, 10_000))

    def build(store: ConfigStore | None = None, **settings: Any) -> Harness:
        store = store or ConfigStore(tmp_path / "config.toml")
        store.save(Settings(**{"api_base_url": studio.base_url, **settings}))
        states: list[dict[str, str]] = []
        client = RegistrationClient(
            http=http,
            store=store,
            capabilities=capabilities,
            on_state=states.append,
            tick_interval=0.01,
            clock=lambda: f"2026-01-01T00:00:{next(ticks):02d}Z",
        )
        return Harness(store, client, states)

    yield build
    await http.aclose()


async def run_until(client: RegistrationClient, stop: asyncio.Event) -> Credentials | None:
    return await asyncio.wait_for(client.run(stop), timeout=10)


async def eventually(predicate: Callable[[], bool], limit_s: float = 5.0) -> None:
    for _ in range(int(limit_s / 0.01)):
        if predicate():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("condition not reached in time")


def file_table(store: ConfigStore) -> dict[str, Any]:
    return tomllib.loads(store.path.read_text())


async def test_full_happy_path(
    studio: Studio, make: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    studio.posts = [(500, "boom"), (200, {"requestId": "rr-1", "status": "pending"})]
    studio.polls = [
        (200, {"status": "pending"}),
        (200, {"status": "pending"}),
        (200, {"status": "approved", "workerId": "w-9", "authToken": "tok-approved-123"}),
    ]
    h = make()
    with caplog.at_level(logging.DEBUG):
        creds = await run_until(h.client, asyncio.Event())
    assert creds is not None
    assert (creds.worker_id, creds.auth_token) == ("w-9", "tok-approved-123")
    # pristine (post failed: still pristine) -> pending once (since kept) -> approved
    assert h.states == [
        {"state": "pristine"},
        {"state": "pending", "requestId": "rr-1", "since": "2026-01-01T00:00:01Z"},
        {"state": "approved"},
    ]
    assert [s.method for s in studio.seen] == ["POST", "POST", "GET", "GET", "GET"]
    assert "register-request failed: 500 Internal Server Error — boom" in caplog.text
    table = file_table(h.store)
    assert table["worker_id"] == "w-9"
    assert table["auth_token"] == "tok-approved-123"
    assert INSTALL_ID.match(table["install_id"])
    assert "registration_request_id" not in table
    assert "registration_secret" not in table
    assert "tok-approved-123" not in caplog.text


async def test_secret_hygiene_and_request_shape(
    studio: Studio, make: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    studio.posts = [(200, {"requestId": "rr-7", "status": "pending"})]
    studio.polls = [(401, "no"), (200, {"status": "approved", "workerId": "w", "authToken": "t"})]
    h = make()
    secrets_seen: list[str] = []

    def spy(snapshot: dict[str, str]) -> None:
        if snapshot["state"] == "pending":
            secret = h.store.load().registration_secret
            assert secret is not None
            secrets_seen.append(secret)

    h.client._on_state = spy
    with caplog.at_level(logging.DEBUG):
        assert await run_until(h.client, asyncio.Event()) is not None
    [secret] = secrets_seen
    assert re.fullmatch(r"[0-9a-f]{64}", secret)
    [body] = studio.post_bodies
    assert set(body) == {"installId", "registrationSecretHash", "capabilities", "userAgent"}
    assert INSTALL_ID.match(body["installId"])
    assert body["registrationSecretHash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert body["userAgent"] == user_agent()
    assert body["capabilities"]["autoEnabled"] is True
    assert "userPresence" not in body["capabilities"]
    posts = [s for s in studio.seen if s.method == "POST"]
    polls = [s for s in studio.seen if s.method == "GET"]
    for seen in posts:
        assert secret not in json.dumps(seen.body)
        assert secret not in json.dumps(seen.headers)
    for seen in polls:
        assert seen.path == "/graphics/api/workers/register-requests/rr-7"
        assert seen.headers["Authorization"] == f"Bearer {secret}"
    assert secret not in caplog.text
    assert "register-poll failed: 401 Unauthorized — no" in caplog.text


async def test_401_keeps_pending(studio: Studio, make: Callable[..., Harness]) -> None:
    studio.posts = [(200, {"requestId": "rr-1", "status": "pending"})]
    studio.polls = [
        (401, "x"),
        (401, "x"),
        (503, "x"),
        (200, {"status": "approved", "workerId": "w", "authToken": "t"}),
    ]
    h = make()
    assert await run_until(h.client, asyncio.Event()) is not None
    assert [s["state"] for s in h.states] == ["pristine", "pending", "approved"]
    assert [s.method for s in studio.seen] == ["POST", "GET", "GET", "GET", "GET"]


async def test_poll_404_goes_pristine_then_fresh_request(
    studio: Studio, make: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    old_secret = "ab" * 32
    studio.posts = [(200, {"requestId": "rr-new", "status": "pending"})]
    studio.polls = [
        (404, {"error": "not_found"}),
        (200, {"status": "approved", "workerId": "w-2", "authToken": "tok-2"}),
    ]
    h = make(
        install_id="0123abcd-0123-4567-89ab-0123456789ab",
        registration_request_id="rr-stale",
        registration_secret=old_secret,
    )
    with caplog.at_level(logging.DEBUG):
        creds = await run_until(h.client, asyncio.Event())
    assert creds is not None and creds.worker_id == "w-2"
    assert [s.path.rsplit("/", 1)[-1] for s in studio.seen] == [
        "rr-stale",
        "register-request",
        "rr-new",
    ]
    assert [s["state"] for s in h.states] == ["pending", "pristine", "pending", "approved"]
    [body] = studio.post_bodies
    assert body["installId"] == "0123abcd-0123-4567-89ab-0123456789ab"  # install id kept
    assert body["registrationSecretHash"] != hashlib.sha256(old_secret.encode()).hexdigest()
    assert "register request not found (stale id; orchestrator will recreate)" in caplog.text


async def test_rejected_waits_then_reset_starts_over(
    studio: Studio, make: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    studio.posts = [(200, {"requestId": "rr-1", "status": "pending"})]
    studio.polls = [
        (200, {"status": "rejected", "reason": "unknown machine"}),
        (200, {"status": "approved", "workerId": "w-3", "authToken": "tok-3"}),
    ]
    h = make()
    assert h.client.request_reset() is False  # not rejected yet
    task = asyncio.create_task(h.client.run(asyncio.Event()))
    await eventually(lambda: bool(h.states) and h.states[-1]["state"] == "rejected")
    await asyncio.sleep(0.1)  # it waits: no more calls while rejected
    assert len(studio.seen) == 2
    assert REJECTED_MESSAGE.format(reason="unknown machine") in caplog.text
    rejected_errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(rejected_errors) == 1
    table = file_table(h.store)
    assert "registration_request_id" not in table and "registration_secret" not in table
    first_install_id = studio.post_bodies[0]["installId"]

    assert h.client.request_reset() is True
    creds = await asyncio.wait_for(task, timeout=10)
    assert creds is not None and creds.worker_id == "w-3"
    assert [s["state"] for s in h.states] == [
        "pristine",
        "pending",
        "rejected",
        "pristine",
        "pending",
        "approved",
    ]
    assert h.states[2] == {"state": "rejected", "reason": "unknown machine"}
    assert studio.post_bodies[1]["installId"] != first_install_id  # reset forgets it too


async def test_stop_while_rejected_returns_none(
    studio: Studio, make: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    studio.posts = [(200, {"requestId": "rr-1", "status": "pending"})]
    studio.polls = [(200, {"status": "rejected"})]
    h = make()
    stop = asyncio.Event()
    task = asyncio.create_task(h.client.run(stop))
    await eventually(lambda: bool(h.states) and h.states[-1]["state"] == "rejected")
    assert h.states[-1] == {"state": "rejected", "reason": ""}
    with caplog.at_level(logging.INFO):
        stop.set()
        assert await asyncio.wait_for(task, timeout=5) is None
    assert STOPPED_MESSAGE in caplog.text


async def test_stop_before_approval_during_wait(
    studio: Studio, make: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    studio.posts = [(200, {"requestId": "rr-1", "status": "pending"})]
    studio.polls = [(200, {"status": "pending"})]
    h = make()
    h.client._tick_interval = 60.0
    stop = asyncio.Event()
    task = asyncio.create_task(h.client.run(stop))
    await eventually(lambda: h.client.state is RegState.PENDING)
    with caplog.at_level(logging.INFO):
        stop.set()
        assert await asyncio.wait_for(task, timeout=2) is None
    assert STOPPED_MESSAGE in caplog.text
    assert file_table(h.store)["registration_request_id"] == "rr-1"  # survives for next run


async def test_stop_interrupts_a_hanging_request(
    studio: Studio, make: Callable[..., Harness]
) -> None:
    studio.hang_polls = True
    studio.polls = [(200, {"status": "pending"})]
    h = make(
        install_id="0123abcd-0123-4567-89ab-0123456789ab",
        registration_request_id="rr-1",
        registration_secret="cd" * 32,
    )
    stop = asyncio.Event()
    task = asyncio.create_task(h.client.run(stop))
    await eventually(lambda: bool(studio.seen))
    stop.set()
    assert await asyncio.wait_for(task, timeout=2) is None


async def test_already_approved_makes_no_http_call(
    studio: Studio, make: Callable[..., Harness]
) -> None:
    h = make(worker_id="w-1", auth_token="tok-1")
    creds = await run_until(h.client, asyncio.Event())
    assert creds is not None and creds.worker_id == "w-1"
    assert studio.seen == []
    assert h.states == [{"state": "approved"}]


async def test_transport_error_stays_pristine(
    make: Callable[..., Harness], caplog: pytest.LogCaptureFixture
) -> None:
    h = make(api_base_url="http://127.0.0.1:9/")  # discard port: connection refused
    h.client._tick_interval = 0.01
    stop = asyncio.Event()
    task = asyncio.create_task(h.client.run(stop))
    with caplog.at_level(logging.WARNING):
        await eventually(lambda: "register-request failed: ConnectError" in caplog.text)
        stop.set()
        assert await asyncio.wait_for(task, timeout=2) is None
    assert h.states == [{"state": "pristine"}]
    table = file_table(h.store)
    assert INSTALL_ID.match(table["install_id"])  # prepared before any HTTP and persisted
    assert re.fullmatch(r"[0-9a-f]{64}", table["registration_secret"])


class FailingStore(ConfigStore):
    def save(self, settings: Settings) -> None:
        if settings.worker_id:
            raise ConfigError("writing config.toml: disk full")
        super().save(settings)


async def test_unsaved_approval_is_logged_at_error(
    tmp_path: Path,
    studio: Studio,
    make: Callable[..., Harness],
    caplog: pytest.LogCaptureFixture,
) -> None:
    studio.posts = [(200, {"requestId": "rr-1", "status": "pending"})]
    studio.polls = [(200, {"status": "approved", "workerId": "w-5", "authToken": "tok-5"})]
    h = make(store=FailingStore(tmp_path / "config.toml"))
    creds = await run_until(h.client, asyncio.Event())
    assert creds is not None and creds.worker_id == "w-5"  # still usable this run
    errors = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("approved credentials could not be saved" in m for m in errors)
