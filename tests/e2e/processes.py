"""The studio and the worker as separate OS processes, talking over loopback."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx

ADMIN_TOKEN = "e2e-admin-token"
T = TypeVar("T")


def wait_for(probe: Callable[[], T | None], timeout: float = 20.0, what: str = "it") -> T:
    """Bounded wait for an outside process to reach a state we can only observe."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = probe()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def worker_config(folder: Path, studio_url: str) -> Path:
    """`<folder>/worker/config.toml` for a worker of the studio at `studio_url`, its models
    under `<folder>/models`."""
    config = folder / "worker" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'api_base_url = "{studio_url}"\nvram_threshold_gb = 8.0\n'
        f'models_root = "{folder / "models"}"\n'
    )
    return config


def approve(studio: StudioProcess) -> str:
    """Approve the first pending register request, once there is one; its worker id."""
    pending = wait_for(lambda: studio.get("/admin/requests?status=pending"), what="a request")
    worker_id: str = studio.post(f"/admin/requests/{pending[0]['requestId']}/approve")["workerId"]
    return worker_id


class StudioProcess:
    def __init__(self, data_dir: Path, port: int = 0) -> None:
        self.data_dir = data_dir
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "studio_worker.studio",
                "--data-dir",
                str(data_dir),
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                "--admin-token",
                ADMIN_TOKEN,
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        assert self.proc.stdout is not None
        self.url = ""
        for line in self.proc.stdout:
            if line.startswith("studio listening on "):
                self.url = line.split()[-1]
                break
        assert self.url, "the studio did not start"
        # Keep reading its log so a full pipe never stalls the studio.
        threading.Thread(target=self._drain, daemon=True).start()
        self.port = int(self.url.rsplit(":", 1)[1])
        self.admin = httpx.Client(
            base_url=self.url, timeout=10, headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
        )

    def _drain(self) -> None:
        assert self.proc.stdout is not None
        for _line in self.proc.stdout:
            pass

    def get(self, path: str) -> Any:
        response = self.admin.get(path)
        response.raise_for_status()
        return response.json()

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        response = self.admin.post(path, json=body or {})
        response.raise_for_status()
        return response.json()

    def submit(self, kind: str, task: dict[str, Any], model: str = "synthetic") -> str:
        job_id: str = self.post("/admin/jobs", {"kind": kind, "task": task, "model": model})[
            "jobId"
        ]
        return job_id

    def wait_job(self, job_id: str, timeout: float = 30.0) -> dict[str, Any]:
        def done() -> dict[str, Any] | None:
            job: dict[str, Any] = self.get(f"/admin/jobs/{job_id}")
            return job if job["status"] in ("done", "failed") else None

        return wait_for(done, timeout, f"job {job_id}")

    def kill9(self) -> None:
        """No goodbye of any kind (the fault tests' studio crash)."""
        self.admin.close()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        self.admin.close()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class WorkerProcess:
    def __init__(self, config: Path, log_path: Path, command: list[str] | None = None) -> None:
        """`command` runs the worker another way (a built binary); default: this package."""
        self.config = config
        self.log_path = log_path
        env = {**os.environ, "STUDIO_WORKER_REGISTRATION_POLL_SECS": "0.3", "PYTHONUNBUFFERED": "1"}
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        program = command or [sys.executable, "-m", "studio_worker"]
        self.proc = subprocess.Popen(
            [*program, "--config", str(config), "run"],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=env,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_exit(self, timeout: float = 20.0) -> int:
        return self.proc.wait(timeout)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._log.close()
        return self.proc.returncode
