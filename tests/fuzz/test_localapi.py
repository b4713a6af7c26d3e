"""The local API's request guards and body parsing (behaviour §8.2) under arbitrary Host,
Origin and Authorization values and bodies: only the documented statuses, never a 500.

The pure guard functions are fuzzed directly; then the real guard middleware
(`LocalApi._guard`) and body reader (`read_json`, with the route's body cap) run in a real
aiohttp server on loopback, driven over a raw socket so that any byte can be sent."""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Iterator

import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from studio_worker.localapi import guards
from studio_worker.localapi.http import read_json
from studio_worker.localapi.server import LocalApi

from ._profile import fuzz, timed

TOKEN = "la_" + "7" * 61
header_text = st.text(
    st.characters(blacklist_categories=("Cs",), blacklist_characters="\r\n"), max_size=60
)
hosts = header_text | st.sampled_from(
    [
        "127.0.0.1", "127.0.0.1:8080", "localhost", "LOCALHOST:1", "[::1]", "[::1]:80", "::1",
        "[", "[::1", "[::1]x", "127.0.0.1:", "127.0.0.1:99999999999", "evil.com",
        "127.0.0.1.evil.com", "localhost.evil", "0x7f.1", "2130706433", "[::ffff:127.0.0.1]",
    ]
)  # fmt: skip
origins = header_text | st.sampled_from(
    [
        "http://127.0.0.1", "http://localhost:3000", "https://[::1]:9", "null", "file://",
        "http://[", "http://[::1", "http://127.0.0.1:99999", "http://evil.com",
        "http://127.0.0.1@evil.com", "javascript:alert(1)", "http://localhost.evil.com",
    ]
)  # fmt: skip
authorizations = header_text | st.sampled_from(
    [f"Bearer {TOKEN}", f"bearer {TOKEN}", f"Bearer  {TOKEN} ", "Bearer", "Bearer ", TOKEN]
)

OK_GUARD_STATUSES = {401, 403}


def _loopback_name(host: str) -> bool:
    return guards.is_loopback_host(host)


# ---- the pure guards ---------------------------------------------------------------


@fuzz(150)
@given(host=st.none() | hosts)
def test_check_host(host: str | None) -> None:
    denial = timed(guards.check_host, host)
    if denial is not None:
        assert denial[0] == 403
    elif host is not None:
        # whatever passed names a loopback host
        name = host.strip()
        name = name[1 : name.find("]")] if name.startswith("[") else name
        if name.count(":") <= 1:
            name = name.partition(":")[0]
        assert _loopback_name(name), host


@fuzz(150)
@given(origin=st.none() | origins)
def test_check_origin(origin: str | None) -> None:
    denial = timed(guards.check_origin, origin)
    assert denial is None or denial[0] == 403


@fuzz(150)
@given(origin=st.none() | origins.filter(lambda o: "[" not in o))
def test_check_origin_without_brackets(origin: str | None) -> None:
    denial = timed(guards.check_origin, origin)
    assert denial is None or denial[0] == 403


@fuzz(150)
@given(authorization=st.none() | authorizations, token=st.just(TOKEN) | header_text)
def test_check_bearer(authorization: str | None, token: str) -> None:
    denial = timed(guards.check_bearer, authorization, token)
    if denial is None:
        assert authorization is not None
        assert authorization.lower().startswith("bearer ")
        assert authorization[7:].strip() == token and token


def test_origin_with_an_unclosed_bracket_is_a_403() -> None:
    """Regression for the bug above, stated plainly."""
    denial = guards.check_origin("http://[")
    assert denial is not None and denial[0] == 403


# ---- the middleware and body parsing over real HTTP -----------------------------------


async def _echo(request: web.Request) -> web.Response:
    body = await read_json(request)
    return web.json_response({"keys": sorted(body)})


async def _status(request: web.Request) -> web.Response:
    return web.json_response({"ok": True})


@pytest.fixture(scope="module")
def server() -> Iterator[int]:
    api = LocalApi.__new__(LocalApi)  # only the guard: it needs nothing but the token
    api.token = TOKEN
    app = web.Application(middlewares=[api._guard], client_max_size=guards.MAX_BODY_BYTES)
    app.router.add_get("/healthz", _status)
    app.router.add_get("/daemon/status", _status)
    app.router.add_put("/daemon/config", _echo)
    loop = asyncio.new_event_loop()
    runner = web.AppRunner(app, access_log=None, handle_signals=False)
    loop.run_until_complete(runner.setup())
    site = web.TCPSite(runner, "127.0.0.1", 0)
    loop.run_until_complete(site.start())
    port = int(runner.addresses[0][1])
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    yield port
    asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
    loop.call_soon_threadsafe(loop.stop)
    thread.join(10)
    loop.close()


def request(
    port: int, method: str, path: str, headers: list[tuple[bytes, bytes]], body: bytes
) -> int:
    lines = [f"{method} {path} HTTP/1.1".encode(), b"Connection: close"]
    lines += [name + b": " + value for name, value in headers]
    lines.append(b"Content-Length: " + str(len(body)).encode())
    raw = b"\r\n".join(lines) + b"\r\n\r\n" + body
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(raw)
        answer = b""
        while b"\r\n" not in answer:
            chunk = sock.recv(4096)
            if not chunk:
                break
            answer += chunk
    status_line = answer.split(b"\r\n", 1)[0].split()
    assert len(status_line) >= 2, answer[:200]
    return int(status_line[1])


# Valid UTF-8 only here: non-UTF-8 header bytes have tests of their own below.
header_bytes = header_text.map(lambda s: s.encode())


@fuzz(100)
@given(
    host=st.none() | hosts.map(lambda s: s.encode()) | header_bytes,
    origin=st.none() | origins.filter(lambda o: "[" not in o).map(lambda s: s.encode()),
    authorization=st.none() | authorizations.map(lambda s: s.encode()) | header_bytes,
    path=st.sampled_from(["/daemon/status", "/healthz", "/nope", "/daemon/nope"]),
)
def test_guards_over_http(
    server: int, host: bytes | None, origin: bytes | None, authorization: bytes | None, path: str
) -> None:
    headers = [
        (name, value)
        for name, value in ((b"Host", host), (b"Origin", origin), (b"Authorization", authorization))
        if value is not None
    ]
    status = request(server, "GET", path, headers, b"")
    assert status in {200, 400, 401, 403, 404}, status
    if status == 200 and path != "/healthz":
        assert authorization is not None and TOKEN.encode() in authorization


@fuzz(100)
@given(body=st.binary(max_size=300) | st.text(max_size=200).map(str.encode))
def test_bodies_over_http(server: int, body: bytes) -> None:
    headers = [(b"Host", b"127.0.0.1"), (b"Authorization", f"Bearer {TOKEN}".encode())]
    status = request(server, "PUT", "/daemon/config", headers, body)
    assert status in {200, 400}, status


def test_an_oversized_body_is_413(server: int) -> None:
    headers = [(b"Host", b"127.0.0.1"), (b"Authorization", f"Bearer {TOKEN}".encode())]
    body = b"{" + b" " * guards.MAX_BODY_BYTES + b"}"
    assert request(server, "PUT", "/daemon/config", headers, body) == 413


def test_deeply_nested_json_body_is_400_not_500(server: int) -> None:
    headers = [(b"Host", b"127.0.0.1"), (b"Authorization", f"Bearer {TOKEN}".encode())]
    status = request(server, "PUT", "/daemon/config", headers, b"[" * 200_000)
    assert status == 400


def test_origin_with_an_unclosed_bracket_over_http(server: int) -> None:
    headers = [(b"Host", b"127.0.0.1"), (b"Origin", b"http://[")]
    assert request(server, "GET", "/daemon/status", headers, b"") == 403


@pytest.mark.parametrize("name", [b"Host", b"Origin"])
def test_a_non_utf8_header_is_refused_not_500(server: int, name: bytes) -> None:
    headers = [(name, b"\x80")] if name == b"Host" else [(b"Host", b"127.0.0.1"), (name, b"\x80")]
    assert request(server, "GET", "/daemon/status", headers, b"") in {400, 403}


def test_a_non_utf8_authorization_is_401_not_500(server: int) -> None:
    headers = [(b"Host", b"127.0.0.1"), (b"Authorization", b"Bearer \x80")]
    status = request(server, "GET", "/daemon/status", headers, b"")
    assert status in {400, 401}
