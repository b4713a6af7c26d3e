from __future__ import annotations

import pytest

from studio_worker.protocol.backoff import GiveUp, ReconnectPolicy, Retry, Terminal, backoff_ms
from studio_worker.protocol.outcomes import EndKind, SessionEnd
from studio_worker.protocol.urls import (
    BaseUrlError,
    display_url,
    download_allowed,
    http_url,
    register_request_url,
    ws_url,
)

DROP = SessionEnd(EndKind.DISCONNECTED)
DROP_AFTER_WELCOME = SessionEnd(EndKind.DISCONNECTED, reached_welcome=True)


@pytest.mark.parametrize(
    ("attempt", "ms"),
    [(1, 1000), (2, 2000), (3, 4000), (4, 8000), (5, 16000), (6, 30000), (7, 30000), (99, 30000)],
)
def test_backoff_schedule(attempt: int, ms: int) -> None:
    assert backoff_ms(attempt) == ms


def test_infinite_by_default_and_reset_after_welcome() -> None:
    policy = ReconnectPolicy()
    delays = [policy.after(DROP) for _ in range(10)]
    assert [d.delay_ms for d in delays if isinstance(d, Retry)][-1] == 30000
    assert policy.after(DROP_AFTER_WELCOME) == Retry(1, 1000)


def test_cap_gives_up() -> None:
    policy = ReconnectPolicy(cap=2)
    assert policy.after(DROP) == Retry(1, 1000)
    assert policy.after(DROP) == Retry(2, 2000)
    assert policy.after(DROP) == GiveUp(2)


@pytest.mark.parametrize("kind", [EndKind.STOPPED, EndKind.AUTH_FAILED, EndKind.FATAL])
def test_terminal_ends_do_not_retry(kind: EndKind) -> None:
    end = SessionEnd(kind, "r")
    assert ReconnectPolicy().after(end) == Terminal(end)


@pytest.mark.parametrize(
    ("base", "register", "ws"),
    [
        (
            "https://studio.minis.gg/",
            "https://studio.minis.gg/graphics/api/workers/register-request",
            "wss://studio.minis.gg/graphics/api/workers/w-123/connect",
        ),
        (
            "https://studio.example/graphics/api/",
            "https://studio.example/graphics/api/workers/register-request",
            "wss://studio.example/graphics/api/workers/w-123/connect",
        ),
        (
            "https://studio.example/custom/graphics/api",
            "https://studio.example/custom/graphics/api/workers/register-request",
            "wss://studio.example/custom/graphics/api/workers/w-123/connect",
        ),
        (
            "http://localhost:9790",
            "http://localhost:9790/graphics/api/workers/register-request",
            "ws://localhost:9790/graphics/api/workers/w-123/connect",
        ),
        (
            "http://localhost:9790/?x=1#f",
            "http://localhost:9790/graphics/api/workers/register-request",
            "ws://localhost:9790/graphics/api/workers/w-123/connect?x=1",
        ),
    ],
)
def test_url_rules(base: str, register: str, ws: str) -> None:
    assert register_request_url(base) == register
    assert ws_url(base, "w-123") == ws


@pytest.mark.parametrize("base", ["not a url", "http://host:99999", "/relative"])
def test_invalid_base_urls(base: str) -> None:
    with pytest.raises(BaseUrlError, match="invalid api_base_url"):
        http_url(base, "/x")


def test_unsupported_ws_scheme() -> None:
    with pytest.raises(BaseUrlError, match="unsupported scheme: ftp"):
        ws_url("ftp://host/", "w")


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://cdn.example/m.gguf", True),
        ("http://127.0.0.1:8080/m.gguf", True),
        ("http://127.9.9.9/m", True),
        ("http://localhost/m", True),
        ("http://[::1]:9/m", True),
        ("http://cdn.example/m.gguf", False),
        ("ftp://127.0.0.1/m", False),
        ("file:///etc/passwd", False),
        ("https:///no-host", False),
        ("http://[::1/unclosed", False),  # malformed: refused, never an exception
        ("", False),
    ],
)
def test_download_guard(url: str, allowed: bool) -> None:
    assert download_allowed(url) is allowed


def test_display_url_drops_query_tokens() -> None:
    assert display_url("https://cdn.example/m.gguf?sig=secret#x") == "https://cdn.example/m.gguf"
    assert display_url("http://[::1/unclosed?x") == "http://[::1/unclosed?x"
