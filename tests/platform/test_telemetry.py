"""Sentry opt-in (behaviour §14.3) against a local HTTP endpoint posing as the DSN.

Each scenario runs in a child process (sentry-sdk installs process-wide hooks: the logging
patch, sys.excepthook), which calls `init_telemetry` exactly as `run_daemon` does, logs,
maybe dies of an uncaught exception, and exits. The endpoint records every envelope.
"""

from __future__ import annotations

import gzip
import http.server
import json
import os
import subprocess
import sys
import textwrap
import threading
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("sentry_sdk", reason="telemetry needs the `telemetry` extra (sentry-sdk)")

from studio_worker import __version__
from studio_worker.config.redact import SecretRedactor
from studio_worker.platform.telemetry import FILTERED, init_telemetry, scrub_event

SRC = Path(__file__).resolve().parents[2] / "src"
AUTH_TOKEN = "at_9b1f0c7e5d3a48c2b6e1f4a7d9c3e8b2"
REG_SECRET = "rs_51c0ffee51c0ffee51c0ffee"


class _Recorder(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_POST(self) -> None:
        raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        encoding = (self.headers.get("Content-Encoding") or "").lower()
        if encoding == "gzip":
            raw = gzip.decompress(raw)
        elif encoding == "deflate":
            raw = zlib.decompress(raw)
        elif encoding == "br":
            import brotli  # type: ignore[import-not-found]

            raw = brotli.decompress(raw)
        self.server.posts.append((self.path, raw))  # type: ignore[attr-defined]
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b"{}")


@pytest.fixture
def endpoint() -> Iterator[http.server.ThreadingHTTPServer]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    server.posts = []  # type: ignore[attr-defined]
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def dsn(server: http.server.ThreadingHTTPServer) -> str:
    return f"http://public@127.0.0.1:{server.server_port}/1"


def items(server: http.server.ThreadingHTTPServer) -> list[dict[str, Any]]:
    """Every item payload of every envelope POSTed, each tagged with its item type."""
    out = []
    for path, raw in server.posts:  # type: ignore[attr-defined]
        assert path.startswith("/api/1/envelope/"), path
        lines = raw.split(b"\n")
        i = 1  # line 0: the envelope header
        while i + 1 < len(lines):
            header = json.loads(lines[i])
            payload = lines[i + 1]
            i += 2
            try:
                body = json.loads(payload)
            except ValueError:
                continue
            if isinstance(body, dict):
                out.append({"_type": header.get("type"), **body})
    return out


def events(server: http.server.ThreadingHTTPServer) -> list[dict[str, Any]]:
    return [i for i in items(server) if i["_type"] == "event"]


def run_child(body: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    script = textwrap.dedent(
        f"""
        import logging, sys
        sys.path.insert(0, {str(SRC)!r})
        from studio_worker.status.logsetup import setup_logging
        from studio_worker.config.redact import SecretRedactor
        from studio_worker.platform.telemetry import init_telemetry

        redactor = SecretRedactor([{AUTH_TOKEN!r}, {REG_SECRET!r}])
        setup_logging(redactor)
        on = init_telemetry(redactor)
        print("telemetry", on, flush=True)
        log = logging.getLogger("studio_worker.session")
        """
    ) + textwrap.dedent(body)
    child_env = {k: v for k, v in os.environ.items() if not k.startswith("SENTRY_")}
    child_env.update(env)
    return subprocess.run(
        [sys.executable, "-c", script],
        env=child_env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_an_error_log_arrives_as_an_event_with_release_and_server_name_and_no_secret(
    endpoint: http.server.ThreadingHTTPServer,
) -> None:
    done = run_child(
        """
        log.warning("studio slow to answer; retrying")
        log.error("upload failed with token %s", AUTH, extra={"op": "job", "auth_token": REG})
        import sentry_sdk
        sentry_sdk.flush(5)
        """.replace("AUTH", repr(AUTH_TOKEN)).replace("REG", repr(REG_SECRET)),
        {"SENTRY_DSN": dsn(endpoint), "SENTRY_ENVIRONMENT": "staging"},
    )
    assert done.returncode == 0, done.stderr
    assert "telemetry True" in done.stdout
    found = events(endpoint)
    assert len(found) == 1, items(endpoint)
    event = found[0]
    assert event["level"] == "error"
    assert event["release"] == f"studio-worker@{__version__}"
    assert event["server_name"] == __import__("socket").gethostname()
    assert event["environment"] == "staging"
    message = json.dumps(event)
    assert "upload failed with token" in message
    assert AUTH_TOKEN not in message and REG_SECRET not in message
    # warnings are breadcrumbs of the next event, not events of their own
    crumbs = event["breadcrumbs"]["values"]
    assert any(c.get("message") == "studio slow to answer; retrying" for c in crumbs), crumbs
    assert all(AUTH_TOKEN.encode() not in raw for _, raw in endpoint.posts)  # type: ignore[attr-defined]
    assert all(REG_SECRET.encode() not in raw for _, raw in endpoint.posts)  # type: ignore[attr-defined]


def test_an_uncaught_exception_is_captured_and_scrubbed(
    endpoint: http.server.ThreadingHTTPServer,
) -> None:
    done = run_child(
        """
        import sentry_sdk
        sentry_sdk.get_client().options["shutdown_timeout"] = 5
        raise RuntimeError("session died; Authorization: Bearer " + AUTH)
        """.replace("AUTH", repr(AUTH_TOKEN)),
        {"SENTRY_DSN": dsn(endpoint)},
    )
    assert done.returncode == 1
    assert "RuntimeError" in done.stderr
    found = events(endpoint)
    assert len(found) == 1, items(endpoint)
    event = found[0]
    (exc,) = event["exception"]["values"]
    assert exc["type"] == "RuntimeError"
    assert exc["mechanism"]["handled"] is False
    assert event["environment"] == "production"  # the default
    assert AUTH_TOKEN not in json.dumps(event)


def test_nothing_is_sent_without_a_dsn(endpoint: http.server.ThreadingHTTPServer) -> None:
    for env in ({}, {"SENTRY_DSN": "   "}, {"SENTRY_ENVIRONMENT": "staging"}):
        done = run_child(
            """
            log.error("an error nobody hears")
            import sentry_sdk
            assert not sentry_sdk.get_client().is_active()
            """,
            env,
        )
        assert done.returncode == 0, done.stderr
        assert "telemetry False" in done.stdout
    assert endpoint.posts == []  # type: ignore[attr-defined]


def test_an_invalid_dsn_is_a_warning_and_telemetry_stays_off(
    endpoint: http.server.ThreadingHTTPServer,
) -> None:
    done = run_child(
        """
        log.error("an error nobody hears")
        """,
        {"SENTRY_DSN": "not a dsn"},
    )
    assert done.returncode == 0, done.stderr
    assert "telemetry False" in done.stdout
    assert "ignoring SENTRY_DSN: not a valid sentry DSN" in done.stderr
    assert endpoint.posts == []  # type: ignore[attr-defined]


def test_init_without_a_dsn_does_nothing_in_process() -> None:
    assert init_telemetry(SecretRedactor(), env={}) is False
    assert init_telemetry(SecretRedactor(), env={"SENTRY_DSN": ""}) is False


def test_scrub_event_masks_known_secrets_headers_and_secret_keys() -> None:
    redactor = SecretRedactor([AUTH_TOKEN])
    event = {
        "message": f"token={AUTH_TOKEN}",
        "request": {"headers": {"Authorization": "Bearer abc.def", "Host": "x"}},
        "extra": {"registration_secret": "whatever-it-is", "n": 3, "ok": "fine"},
        "breadcrumbs": {"values": [{"message": "sent Bearer zzz123 upstream"}]},
        "pairs": [["Cookie", "s=1"], ["Accept", "*/*"]],
    }
    out = scrub_event(event, redactor)
    text = json.dumps(out)
    assert AUTH_TOKEN not in text and "abc.def" not in text and "zzz123" not in text
    assert out["request"]["headers"] == {"Authorization": FILTERED, "Host": "x"}
    assert out["extra"] == {"registration_secret": FILTERED, "n": 3, "ok": "fine"}
    assert out["pairs"] == [["Cookie", FILTERED], ["Accept", "*/*"]]
    # a secret learned after start-up is scrubbed too
    later = "ls_late_secret_1234567"
    redactor.register(later)
    assert later not in json.dumps(scrub_event({"m": later}, redactor))
