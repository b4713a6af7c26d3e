"""A real studio and a real worker daemon (two OS processes on loopback) for the dashboard
tests, and headless Chromium driven by Playwright."""

from __future__ import annotations

import json
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS / "e2e") not in sys.path:
    sys.path.insert(0, str(TESTS / "e2e"))

from processes import StudioProcess, WorkerProcess, wait_for  # noqa: E402

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
SHOTS_ENV = "STUDIO_WORKER_DASHBOARD_SHOTS"  # a folder: save a PNG of each tab there


@dataclass
class Live:
    studio: StudioProcess
    worker: WorkerProcess
    config: Path
    models_root: Path
    url: str
    token: str
    worker_id: str

    @property
    def auth(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def api(self, method: str, path: str, **kw: Any) -> httpx.Response:
        headers = {**self.auth, **kw.pop("headers", {})}
        return httpx.request(method, self.url + path, headers=headers, timeout=30, **kw)

    def status(self) -> dict[str, Any]:
        answer: dict[str, Any] = self.api("GET", "/daemon/status").json()
        return answer

    @property
    def dashboard(self) -> str:
        return f"{self.url}/#token={self.token}"


def start_worker(root: Path, studio: StudioProcess) -> tuple[WorkerProcess, Path, Path]:
    """A worker daemon process for `studio` with an ephemeral local API port."""
    config = root / "worker" / "config.toml"
    config.parent.mkdir(parents=True)
    models_root = root / "models"
    cached = models_root / "synthetic" / "demo-model"
    cached.mkdir(parents=True)
    (cached / "weights.bin").write_bytes(b"\0" * 4096)
    config.write_text(
        f'api_base_url = "{studio.url}"\nvram_threshold_gb = 8.0\n'
        f'models_root = "{models_root}"\nauto_update_enabled = false\nlocal_api_port = 0\n'
    )
    return WorkerProcess(config, root / "worker.log"), config, models_root


def discovered(config: Path) -> dict[str, str]:
    discovery = config.parent / "local-api.json"
    found: dict[str, str] = wait_for(
        lambda: json.loads(discovery.read_text()) if discovery.exists() else None,
        60,
        "the local API discovery file",
    )
    return found


def pending_request(studio: StudioProcess) -> dict[str, Any]:
    pending: list[dict[str, Any]] = wait_for(
        lambda: studio.get("/admin/requests?status=pending"), 60, "a register request"
    )
    return pending[0]


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("dashboard")
    studio = StudioProcess(root / "studio")
    worker, config, models_root = start_worker(root, studio)
    try:
        request_id = pending_request(studio)["requestId"]
        worker_id = studio.post(f"/admin/requests/{request_id}/approve")["workerId"]
        found = discovered(config)
        live = Live(studio, worker, config, models_root, found["url"], found["token"], worker_id)
        wait_for(lambda: live.status()["session"]["state"] == "connected", 60, "the studio session")
        yield live
    finally:
        worker.stop()
        studio.stop()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: install Debian's chromium (apt-get install chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed (pip)"
    )
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 860},
            color_scheme="dark",
        )
        try:
            yield context
        finally:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser_context: Any) -> Iterator[Any]:
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # An HTTP error answer (a refused token, a 404) is logged by Chromium as "Failed to
    # load resource"; the tests check those answers themselves. Anything else is a bug.
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.set_default_timeout(20_000)
    yield page
    page.close()
    assert errors == [], f"the page logged errors: {errors}"


def shots_dir() -> Path | None:
    value = os.environ.get(SHOTS_ENV)
    return Path(value) if value else None
