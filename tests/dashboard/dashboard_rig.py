"""Helpers of the dashboard tests: a real studio and a real worker daemon as two OS
processes on loopback. (A module of its own, not conftest: several test folders have a
rootless conftest.py, so `from conftest import …` could find another one.)"""

from __future__ import annotations

import importlib.util
import json
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

TESTS = Path(__file__).resolve().parents[1]
for folder in (TESTS, TESTS / "e2e"):
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))

from processes import StudioProcess, WorkerProcess, wait_for  # noqa: E402

from fixtures.tiny_models import write_tiny_gguf  # noqa: E402

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
TINY_LLM = "llama-cpp/tiny-llama"  # cached for the worker when gguf can write it


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
    if importlib.util.find_spec("gguf") is not None:  # a real model for Load / Unload
        (models_root / TINY_LLM).mkdir(parents=True)
        write_tiny_gguf(models_root / TINY_LLM / "tiny.gguf")
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


def shots_dir() -> Path | None:
    value = os.environ.get(SHOTS_ENV)
    return Path(value) if value else None
