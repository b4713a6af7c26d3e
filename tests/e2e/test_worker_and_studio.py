"""End to end: a worker process and a studio process on loopback, nothing faked."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import tomllib
import wave
from collections.abc import Iterator
from pathlib import Path

import pytest
from PIL import Image
from processes import StudioProcess, WorkerProcess, approve, wait_for

from studio_worker.app import EXIT_AUTH_FAILED, EXIT_OK

FIVE_KINDS = [
    ("image", {"prompt": "a lantern", "ext": "png", "width": 64, "height": 64}),
    ("llm", {"messages": [{"role": "user", "content": "Name three dragons."}]}),
    ("audio_stt", {"inputUrl": "https://assets.example/a.wav"}),
    ("audio_tts", {"text": "hello there"}),
    ("video", {"prompt": "a fox", "seconds": 1, "fps": 4, "width": 64, "height": 64}),
]


@pytest.fixture
def studio(tmp_path: Path) -> Iterator[StudioProcess]:
    proc = StudioProcess(tmp_path / "studio")
    yield proc
    proc.stop()


def fresh_worker(tmp_path: Path, url: str) -> WorkerProcess:
    config = tmp_path / "worker" / "config.toml"
    config.parent.mkdir(parents=True, exist_ok=True)
    config.write_text(
        f'api_base_url = "{url}"\nvram_threshold_gb = 8.0\nmodels_root = "{tmp_path / "models"}"\n'
    )
    return WorkerProcess(config, tmp_path / "worker.log")


def cli(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "studio_worker", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )


def test_fresh_worker_registers_and_serves_every_kind(
    studio: StudioProcess, tmp_path: Path
) -> None:
    worker = fresh_worker(tmp_path, studio.url)
    try:
        # Pending first: the secret never leaves the box, only its hash.
        request = wait_for(lambda: studio.get("/admin/requests?status=pending"))[0]
        # the worker saves the request id once the studio has answered: wait for the save
        config = wait_for(
            lambda: (
                (c := tomllib.loads(worker.config.read_text())).get("registration_request_id") and c
            ),
            what="the request id saved in config.toml",
        )
        assert config["registration_request_id"] == request["requestId"]
        assert len(config["registration_secret"]) == 64
        assert config["registration_secret"] not in json.dumps(request)
        worker_id = approve(studio)

        jobs = {kind: studio.submit(kind, task) for kind, task in FIVE_KINDS}
        results = {kind: studio.wait_job(job_id) for kind, job_id in jobs.items()}
        assert {k: r["status"] for k, r in results.items()} == dict.fromkeys(jobs, "done")
        assert all(r["workerId"] == worker_id for r in results.values())

        image = studio.admin.get(f"/admin/jobs/{jobs['image']}/result").content
        assert Image.open(io.BytesIO(image)).size == (64, 64)
        tts = studio.admin.get(f"/admin/jobs/{jobs['audio_tts']}/result").content
        with wave.open(io.BytesIO(tts)) as wav:
            assert wav.getframerate() == 22050
        llm = results["llm"]
        assert llm["result"]["object"] == "chat.completion"
        assert llm["prompt"] == "Name three dragons."
        assert results["audio_stt"]["prompt"] == "https://assets.example/a.wav"

        config = tomllib.loads(worker.config.read_text())
        assert config["worker_id"] == worker_id and config["auth_token"]
        assert "registration_secret" not in config
        assert "registration_request_id" not in config
        logs = wait_for(
            lambda: [
                e
                for e in studio.get(f"/admin/workers/{worker_id}/logs")
                if "offer received" in e["message"]
            ],
            what="shipped logs",
        )
        assert logs[0]["category"] == "ws"
    finally:
        assert worker.stop() == EXIT_OK
    assert config["auth_token"] not in worker.log


def test_studio_restart_mid_session(studio: StudioProcess, tmp_path: Path) -> None:
    worker = fresh_worker(tmp_path, studio.url)
    try:
        approve(studio)
        assert studio.wait_job(studio.submit(*FIVE_KINDS[1]))["status"] == "done"
        port = studio.port
        studio.stop()
        restarted = StudioProcess(studio.data_dir, port=port)
        try:
            job = restarted.wait_job(restarted.submit(*FIVE_KINDS[0]), timeout=40)
            assert job["status"] == "done"
        finally:
            restarted.stop()
        assert worker.proc.poll() is None  # the same worker process, reconnected
        assert "reconnect attempt" in worker.log
    finally:
        worker.stop()


def test_revoked_token_then_401_are_clean_exits(studio: StudioProcess, tmp_path: Path) -> None:
    worker = fresh_worker(tmp_path, studio.url)
    worker_id = approve(studio)
    assert studio.wait_job(studio.submit(*FIVE_KINDS[1]))["status"] == "done"
    studio.post(f"/admin/workers/{worker_id}/revoke")
    assert worker.wait_exit() == EXIT_AUTH_FAILED
    worker.stop()
    assert "ws auth failed: server closed 4001" in worker.log
    assert "studio-worker register --reset" in worker.log

    again = WorkerProcess(worker.config, tmp_path / "again.log")
    assert again.wait_exit() == EXIT_AUTH_FAILED
    again.stop()
    assert "401 on websocket upgrade" in again.log


def test_disable_and_enable_reach_the_running_worker(studio: StudioProcess, tmp_path: Path) -> None:
    worker = fresh_worker(tmp_path, studio.url)
    try:
        worker_id = approve(studio)
        assert studio.wait_job(studio.submit(*FIVE_KINDS[1]))["status"] == "done"
        assert cli(worker.config, "disable").returncode == 0
        wait_for(
            lambda: not studio.get("/admin/workers")[0]["capabilities"]["autoEnabled"],
            what="autoEnabled false in a heartbeat",
        )
        job_id = studio.submit(*FIVE_KINDS[1])
        assert studio.get(f"/admin/jobs/{job_id}")["status"] == "queued"
        assert cli(worker.config, "enable").returncode == 0
        assert studio.wait_job(job_id)["status"] == "done"

        def shipped(text: str) -> bool:
            logs = studio.get(f"/admin/workers/{worker_id}/logs")
            return any(text in e["message"] for e in logs)

        # log lines ship once a second: the job may be done before the last batch lands
        wait_for(lambda: shipped("claiming paused by operator"), what="the pause log line")
        wait_for(lambda: shipped("claiming resumed by operator"), what="the resume log line")
    finally:
        worker.stop()
