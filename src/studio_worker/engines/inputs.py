"""Fetching a job's input (audio to transcribe, images to edit) over HTTP.

One guard for every input URL (protocol §9): `https` is required; plain `http` only to
loopback (`localhost`, `127.0.0.0/8`, `::1`) for tests and local mirrors. Redirects are
followed by hand so every hop passes the same guard. The size cap is enforced while the
body streams in, so an oversized input never sits whole in memory.
"""

from __future__ import annotations

from urllib.parse import urljoin

import httpx

from studio_worker import user_agent
from studio_worker.domain.results import JobError
from studio_worker.protocol.urls import display_url, download_allowed

__all__ = ["check_url", "display_url", "fetch_input"]

MAX_REDIRECTS = 5
_REDIRECTS = frozenset({301, 302, 303, 307, 308})


def check_url(url: str, *, what: str = "input") -> None:
    """Raise a non-retryable JobError unless `url` passes the download guard."""
    if not download_allowed(url):
        raise JobError(
            f"{what} URL must use https (loopback http is allowed for tests/mirrors): "
            f"{display_url(url)}",
            retryable=False,
        )


def _size(n: int) -> str:
    return f"{n / 1_000_000:.1f} MB" if n >= 1_000_000 else f"{n} bytes"


def _too_large(what: str, url: str, max_bytes: int, seen: str) -> JobError:
    return JobError(
        f"{what} at {display_url(url)} is too large: {seen}, the limit is {_size(max_bytes)}",
        retryable=False,
    )


def fetch_input(url: str, *, max_bytes: int, timeout_s: float = 60, what: str = "input") -> bytes:
    """GET `url` and return its body, at most `max_bytes` long.

    Failures are `JobError`s: a refused URL or an oversized body is terminal
    (`retryable=False`); a network error or a non-2xx answer may pass (`retryable=True`).
    """
    headers = {"User-Agent": user_agent()}
    current = url
    try:
        with httpx.Client(timeout=timeout_s, follow_redirects=False, headers=headers) as http:
            for _ in range(MAX_REDIRECTS + 1):
                check_url(current, what=what)
                with http.stream("GET", current) as response:
                    if response.status_code in _REDIRECTS and "location" in response.headers:
                        current = urljoin(current, response.headers["location"])
                        continue
                    if not 200 <= response.status_code < 300:
                        raise JobError(
                            f"GET {display_url(current)} -> {response.status_code}",
                            retryable=True,
                        )
                    declared = response.headers.get("content-length", "")
                    if declared.isdigit() and int(declared) > max_bytes:
                        raise _too_large(what, current, max_bytes, _size(int(declared)))
                    body = bytearray()
                    for chunk in response.iter_bytes():
                        body += chunk
                        if len(body) > max_bytes:
                            raise _too_large(
                                what, current, max_bytes, f"more than {_size(max_bytes)}"
                            )
                    return bytes(body)
            raise JobError(
                f"{what} at {display_url(url)}: more than {MAX_REDIRECTS} redirects",
                retryable=False,
            )
    except httpx.HTTPError as exc:
        raise JobError(
            f"could not fetch {what} {display_url(current)}: {type(exc).__name__}: {exc}",
            retryable=True,
        ) from exc
