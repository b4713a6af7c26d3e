"""Fetching job inputs: the URL guard, the size cap and status errors, on a real server."""

from __future__ import annotations

import socket
from typing import TYPE_CHECKING

import pytest

from studio_worker.domain.results import JobError
from studio_worker.engines.inputs import check_url, fetch_input

if TYPE_CHECKING:
    from conftest import Served


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/a.wav",
        "http://10.0.0.1/a.wav",
        "http://127.example.com/a.wav",
        "ftp://127.0.0.1/a.wav",
        "file:///etc/passwd",
        "a.wav",
        "https:///no-host",
    ],
)
def test_guard_refuses_before_any_request(url: str) -> None:
    with pytest.raises(JobError) as err:
        fetch_input(url, max_bytes=10)
    assert err.value.retryable is False
    assert err.value.message.startswith(
        "input URL must use https (loopback http is allowed for tests/mirrors): "
    )


@pytest.mark.parametrize(
    "url",
    [
        "https://example.com/a.wav",
        "http://127.0.0.1:9/a.wav",
        "http://127.1.2.3/a.wav",
        "http://localhost/a.wav",
        "http://[::1]:8080/a.wav",
    ],
)
def test_guard_allows_https_and_loopback_http(url: str) -> None:
    check_url(url)


def test_guard_names_what_and_hides_the_query() -> None:
    with pytest.raises(JobError) as err:
        check_url("http://example.com/a.png?token=secret", what="init image")
    assert err.value.message == (
        "init image URL must use https (loopback http is allowed for tests/mirrors): "
        "http://example.com/a.png"
    )


def test_body_comes_back_whole(served: Served) -> None:
    body = bytes(range(256)) * 40
    url = served.add("/a.bin", body)
    assert fetch_input(url + "?sig=1", max_bytes=len(body)) == body
    assert served.hits == ["/a.bin?sig=1"]


def test_declared_length_over_the_cap_is_refused(served: Served) -> None:
    url = served.add("/big.bin", b"x" * 2001)
    with pytest.raises(JobError) as err:
        fetch_input(url, max_bytes=2000)
    assert err.value.retryable is False
    assert err.value.message == f"input at {url} is too large: 2001 bytes, the limit is 2000 bytes"


def test_undeclared_length_is_capped_while_streaming(served: Served) -> None:
    url = served.add("/stream.bin", b"y" * 300_000, send_length=False)
    with pytest.raises(JobError) as err:
        fetch_input(url, max_bytes=100_000)
    assert err.value.retryable is False
    assert "too large: more than 100000 bytes" in err.value.message
    # within the cap the same undeclared body is fine
    assert fetch_input(url, max_bytes=300_000) == b"y" * 300_000


@pytest.mark.parametrize("status", [404, 500, 503])
def test_non_2xx_is_a_retryable_error_naming_the_status(served: Served, status: int) -> None:
    url = served.add("/x.wav", b"nope", status=status)
    with pytest.raises(JobError) as err:
        fetch_input(url + "?token=abc", max_bytes=100)
    assert err.value.retryable is True
    assert err.value.message == f"GET {url} -> {status}"


def test_redirects_are_followed_and_guarded(served: Served) -> None:
    target = served.add("/real.wav", b"RIFF")
    hop = served.add("/hop", status=302, headers={"Location": "/real.wav"})
    assert fetch_input(hop, max_bytes=100) == b"RIFF"
    away = served.add("/away", status=307, headers={"Location": "http://example.com/x"})
    with pytest.raises(JobError) as err:
        fetch_input(away, max_bytes=100)
    assert err.value.retryable is False and "must use https" in err.value.message
    assert served.hits == ["/hop", "/real.wav", "/away"]
    assert target.endswith("/real.wav")


def test_unreachable_server_is_retryable() -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(JobError) as err:
        fetch_input(f"http://127.0.0.1:{port}/a.wav", max_bytes=100, timeout_s=5)
    assert err.value.retryable is True
    assert err.value.message.startswith(f"could not fetch input http://127.0.0.1:{port}/a.wav: ")
