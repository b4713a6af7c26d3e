"""Studio URL construction (protocol §1.2-§1.3) and the download URL guard (§9), pure."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

API_PREFIX = "/graphics/api"


class BaseUrlError(ValueError):
    pass


def _split(base: str) -> tuple[str, str, str, str]:
    try:
        parts = urlsplit(base.strip())
        _ = parts.port  # raises on a bad port
    except ValueError as exc:
        raise BaseUrlError(f'invalid api_base_url "{base}": {exc}') from None
    if not parts.scheme or not parts.netloc:
        raise BaseUrlError(f'invalid api_base_url "{base}": relative URL without a base')
    return parts.scheme.lower(), parts.netloc, parts.path, parts.query


def normalise(base: str) -> str:
    """The studio root without `/graphics/api`, query, fragment or trailing `/`."""
    scheme, netloc, path, _query = _split(base)
    path = path.rstrip("/")
    path = path.removesuffix(API_PREFIX)
    return urlunsplit((scheme, netloc, path, "", "")).rstrip("/")


def http_url(base: str, route: str) -> str:
    """`normalise(base) + /graphics/api + route`; `route` starts with `/`."""
    return normalise(base) + API_PREFIX + route


def ws_url(base: str, worker_id: str) -> str:
    scheme, netloc, path, query = _split(base)
    mapped = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(scheme)
    if mapped is None:
        raise BaseUrlError(f"unsupported scheme: {scheme}")
    path = path.rstrip("/")
    if not path.endswith(API_PREFIX):
        path += API_PREFIX
    path += f"/workers/{worker_id}/connect"
    # Upstream quirk kept: the query string survives on the WebSocket side (§1.3).
    return urlunsplit((mapped, netloc, path, query, ""))


def register_request_url(base: str) -> str:
    return http_url(base, "/workers/register-request")


def register_poll_url(base: str, request_id: str) -> str:
    return http_url(base, f"/workers/register-requests/{request_id}")


def complete_url(base: str, worker_id: str, job_id: str) -> str:
    return http_url(base, f"/workers/{worker_id}/jobs/{job_id}/complete")


@dataclass(frozen=True, slots=True)
class StudioLink:
    """Where and as whom an approved worker talks to its studio."""

    base_url: str
    worker_id: str
    auth_token: str

    def __repr__(self) -> str:  # never print the token
        return f"StudioLink(base_url={self.base_url!r}, worker_id={self.worker_id!r})"


# ---- downloads (protocol §9): models, job inputs, update feeds -------------------------


def is_loopback(host: str) -> bool:
    """`localhost`, 127.0.0.0/8 or ::1 (brackets allowed)."""
    host = host.strip("[]").lower()
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def download_allowed(url: str) -> bool:
    """https anywhere, plain http only to loopback (tests and local mirrors)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
    except ValueError:  # a malformed netloc, e.g. an unclosed IPv6 bracket
        return False
    scheme = parts.scheme.lower()
    return bool(host) and (scheme == "https" or (scheme == "http" and is_loopback(host)))


def display_url(url: str) -> str:
    """The URL without its query and fragment: signed URLs carry tokens there."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return url
    return f"{parts.scheme}://{parts.netloc}{parts.path}" if parts.scheme else url
