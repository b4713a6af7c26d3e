"""The request guards of behaviour §8.2, as pure functions over header values.

Checked in order: the Host header (DNS rebinding), the Origin header (cross-site
requests), then the bearer token (constant-time). Each returns None when the request
passes, else the status and the plain-text body to answer.
"""

from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from studio_worker.protocol.urls import is_loopback

MAX_BODY_BYTES = 1024 * 1024
MAX_MEDIA_BODY_BYTES = 64 * 1024 * 1024

UNAUTHORIZED = (
    "missing or invalid Authorization bearer token; local clients can read the current "
    "token from the local-api.json discovery file in the worker's config directory"
)


def is_loopback_host(host: str) -> bool:
    return is_loopback(host.strip())


def _split_host_port(value: str) -> str | None:
    """The host of a `Host` header value (`name`, `name:port`, `[v6]`, `[v6]:port`)."""
    value = value.strip()
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            return None
        rest = value[end + 1 :]
        if rest and not (rest.startswith(":") and rest[1:].isdigit()):
            return None
        return value[1:end]
    if value.count(":") > 1:  # a bare IPv6 literal without brackets
        return value
    host, _, port = value.partition(":")
    if port and not port.isdigit():
        return None
    return host


def check_host(host: str | None) -> tuple[int, str] | None:
    if host is None:
        return None
    name = _split_host_port(host)
    if name is None or not is_loopback_host(name):
        return 403, f'forbidden: non-loopback Host header "{printable(host)}"'
    return None


def check_origin(origin: str | None) -> tuple[int, str] | None:
    if origin is None:
        return None
    try:
        parts = urlsplit(origin.strip())
        host = parts.hostname
        parts.port  # noqa: B018 - raises on a malformed port
        ok = parts.scheme in ("http", "https") and host is not None and is_loopback_host(host)
    except ValueError:  # an unclosed bracket, a bad port
        ok = False
    if not ok:
        return 403, f'forbidden: cross-site request from Origin "{printable(origin)}"'
    return None


def printable(value: str) -> str:
    """A header value safe to quote back: undecodable bytes as escapes."""
    return value.encode("utf-8", "backslashreplace").decode("utf-8")


def check_bearer(authorization: str | None, token: str) -> tuple[int, str] | None:
    presented = ""
    if authorization is not None:
        for prefix in ("Bearer ", "bearer "):
            if authorization.startswith(prefix):
                presented = authorization[len(prefix) :].strip()
                break
    if not presented or not hmac.compare_digest(
        presented.encode("utf-8", "surrogateescape"), token.encode()
    ):
        return 401, UNAUTHORIZED
    return None


def body_too_large(limit: int) -> str:
    return f"request body exceeds {limit} bytes"
