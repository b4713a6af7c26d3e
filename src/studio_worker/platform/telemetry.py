"""Opt-in crash and error reporting to Sentry (behaviour §14.3).

Off unless `SENTRY_DSN` is set and non-blank; no DSN is ever built in. When on:
uncaught exceptions are captured, `error` log records become events, `warning` records
become breadcrumbs (sent with the next event), the release is `studio-worker@<version>`,
the server name is the host name, the environment is `SENTRY_ENVIRONMENT` (default
`production`), and there is no performance tracing.

Nothing leaves the machine unscrubbed: every event and breadcrumb passes `scrub_event`,
which masks each secret the `SecretRedactor` knows at send time (so secrets learned after
start-up are covered too), any `Authorization`/cookie header and any bearer token, and the
values of keys named like secrets. Local variables and request bodies are never attached
and `send_default_pii` is off.

sentry-sdk is the optional `telemetry` extra: without it a set DSN is a warning.
"""

from __future__ import annotations

import logging
import os
import re
import socket
from collections.abc import Mapping
from typing import Any

from studio_worker import __version__
from studio_worker.config.redact import MASK, SecretRedactor

log = logging.getLogger(__name__)

DSN_ENV = "SENTRY_DSN"
ENVIRONMENT_ENV = "SENTRY_ENVIRONMENT"
DEFAULT_ENVIRONMENT = "production"
INVALID_DSN = "ignoring SENTRY_DSN: not a valid sentry DSN"
FILTERED = "[Filtered]"

_SENSITIVE_KEY = re.compile(
    r"authorization|cookie|token|secret|password|passwd|api[-_]?key|dsn|credential",
    re.IGNORECASE,
)
_BEARER = re.compile(r"(?i)\b(bearer|basic)\s+[A-Za-z0-9._~+/=-]+")
_MAX_DEPTH = 32


def release() -> str:
    return f"studio-worker@{__version__}"


def init_telemetry(redactor: SecretRedactor, env: Mapping[str, str] | None = None) -> bool:
    """Start Sentry when `SENTRY_DSN` asks for it; returns whether telemetry is on."""
    env = os.environ if env is None else env
    dsn = (env.get(DSN_ENV) or "").strip()
    if not dsn:
        return False
    try:
        import sentry_sdk
        from sentry_sdk.integrations.logging import LoggingIntegration
        from sentry_sdk.utils import BadDsn, Dsn
    except ImportError:
        log.warning(
            "ignoring SENTRY_DSN: sentry-sdk is not installed (the `telemetry` extra)",
            extra={"op": "startup"},
        )
        return False
    try:
        Dsn(dsn)
    except (BadDsn, ValueError):
        log.warning(INVALID_DSN, extra={"op": "startup"})
        return False
    environment = (env.get(ENVIRONMENT_ENV) or "").strip() or DEFAULT_ENVIRONMENT

    def before_send(event: Any, hint: Any) -> Any:
        return scrub_event(event, redactor)

    def before_breadcrumb(crumb: Any, hint: Any) -> Any:
        return scrub_event(crumb, redactor)

    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release(),
        server_name=socket.gethostname(),
        traces_sample_rate=0.0,
        send_default_pii=False,
        include_local_variables=False,
        max_request_body_size="never",
        auto_enabling_integrations=False,
        before_send=before_send,
        before_breadcrumb=before_breadcrumb,
        integrations=[LoggingIntegration(level=logging.WARNING, event_level=logging.ERROR)],
    )
    log.info(
        "crash reporting on (Sentry)",
        extra={"op": "startup", "environment": environment, "release": release()},
    )
    return True


def scrub_event(event: Any, redactor: SecretRedactor) -> Any:
    """A copy of `event` (any JSON-ish value) with every secret masked."""
    return _scrub(event, redactor, 0)


def _scrub(value: Any, redactor: SecretRedactor, depth: int) -> Any:
    if depth > _MAX_DEPTH:
        return FILTERED
    if isinstance(value, str):
        return _BEARER.sub(lambda m: f"{m.group(1)} {MASK}", redactor.scrub(value))
    if isinstance(value, bytes):
        return _scrub(value.decode("utf-8", "replace"), redactor, depth)
    if isinstance(value, Mapping):
        out: dict[Any, Any] = {}
        for key, item in value.items():
            if (
                isinstance(key, str)
                and _SENSITIVE_KEY.search(key)
                and isinstance(item, str | bytes)
            ):
                out[key] = FILTERED
            else:
                out[key] = _scrub(item, redactor, depth + 1)
        return out
    if isinstance(value, list | tuple):
        items = [_scrub(item, redactor, depth + 1) for item in value]
        # headers may come as [name, value] pairs
        if len(items) == 2 and isinstance(items[0], str) and _SENSITIVE_KEY.search(items[0]):
            items[1] = FILTERED
        return items if isinstance(value, list) else tuple(items)
    return value
