"""`studio-worker dashboard`: finds the running daemon and opens its dashboard."""

from __future__ import annotations

import http.server
import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest


class Healthz(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        body = b'{"ok": true}'
        self.send_response(200 if self.path == "/healthz" else 404)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def api() -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Healthz)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def dashboard(config: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "studio_worker", "--config", str(config), "dashboard", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
        check=False,
    )


def test_print_url_carries_the_token_in_the_fragment(tmp_path: Path, api: str) -> None:
    config = tmp_path / "config.toml"
    (tmp_path / "local-api.json").write_text(json.dumps({"url": api, "token": "tok-123"}))
    done = dashboard(config, "--print-url")
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"{api}/#token=tok-123\n"


def test_opens_the_browser_with_the_dashboard_address(tmp_path: Path, api: str) -> None:
    config = tmp_path / "config.toml"
    (tmp_path / "local-api.json").write_text(json.dumps({"url": api, "token": "tok-9"}))
    opened = tmp_path / "opened.txt"
    browser = tmp_path / "browser.sh"
    browser.write_text(f'#!/bin/sh\necho "$1" > {opened}\n')
    browser.chmod(0o755)
    done = dashboard(config, BROWSER=str(browser))
    assert done.returncode == 0, done.stderr
    assert opened.read_text().strip() == f"{api}/#token=tok-9"
    assert "tok-9" not in done.stdout  # the token is not echoed when a browser opened


def test_no_running_worker_is_a_clear_error(tmp_path: Path) -> None:
    done = dashboard(tmp_path / "config.toml", "--print-url")
    assert done.returncode == 1
    assert "error: no running worker answers here" in done.stderr


def test_a_stale_discovery_file_is_the_same_clear_error(tmp_path: Path) -> None:
    import socket

    with socket.socket() as sock:  # a port nobody listens on any more
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    (tmp_path / "local-api.json").write_text(
        json.dumps({"url": f"http://127.0.0.1:{port}", "token": "old"})
    )
    done = dashboard(tmp_path / "config.toml", "--print-url")
    assert done.returncode == 1
    assert "no running worker" in done.stderr
    assert "old" not in done.stdout
