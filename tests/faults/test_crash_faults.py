"""`kill -9` of the worker process: mid-job (the journal reports it at the next welcome,
the model download resumes) and mid config save (the file is whole, old or new)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import tomllib
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from proxy import FaultProxy

from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.jobs.journal import RESTARTED_ERROR
from studio_worker.studio.server import StudioServer

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from fixtures.tiny_models import TINY_ANSWER, write_tiny_gguf  # noqa: E402

LIMIT_S = 30.0
MODEL = "tiny-llama"


class Worker:
    """`studio-worker run` as its own process, killable."""

    def __init__(self, config: Path, log: Path) -> None:
        env = {**os.environ, "STUDIO_WORKER_REGISTRATION_POLL_SECS": "0.2", "PYTHONUNBUFFERED": "1"}
        self.log_path = log
        with open(log, "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "studio_worker", "--config", str(config), "run"],
                stdout=out,
                stderr=subprocess.STDOUT,
                env=env,
            )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def kill9(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        return self.proc.returncode


async def until(probe, what: str, limit: float = LIMIT_S):  # type: ignore[no-untyped-def]
    async with asyncio.timeout(limit):
        while not (value := probe()):
            await asyncio.sleep(0.05)
    assert value, what
    return value


@pytest.fixture
async def studio(tmp_path: Path) -> AsyncIterator[StudioServer]:
    server = StudioServer(tmp_path / "studio")
    await server.start()
    yield server
    await server.stop()


async def test_kill_9_mid_download_is_reported_at_once_and_the_download_resumes(
    studio: StudioServer, tmp_path: Path
) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    pytest.importorskip("gguf", reason="gguf is not installed")
    gguf = studio.shelf.root / "tiny.gguf"
    write_tiny_gguf(gguf, vocab_extra=20_000)  # a few MB: time to kill it mid-way
    size = gguf.stat().st_size
    assert studio.url is not None
    files = FaultProxy("127.0.0.1", int(studio.url.rsplit(":", 1)[1]))
    await files.start()
    files.rate_bps = 512 * 1024
    config = tmp_path / "worker" / "config.toml"
    models = tmp_path / "models"
    ConfigStore(config).save(
        Settings(api_base_url=studio.url, models_root=models, auto_update_enabled=False)
    )
    worker = Worker(config, tmp_path / "worker.log")
    try:
        await until(studio.pending_requests, "a register request")
        worker_id = studio.approve(studio.pending_requests()[0].id)
        model_file = {
            "role": "model",
            "url": f"{files.url}/files/tiny.gguf",
            "filename": "tiny.gguf",
            "approxBytes": size,
            "sha256": hashlib.sha256(gguf.read_bytes()).hexdigest(),
        }
        source = {"engine": "llama-cpp", "files": [model_file], "cliDefaults": {"contextSize": 256}}
        task = {"kind": "llm", "messages": [{"role": "user", "content": "hello"}], "maxTokens": 32}
        job_id = studio.submit_job("llm", {**task, "temperature": 0}, MODEL, model_source=source)
        part = models / "llama-cpp" / MODEL / "tiny.gguf.part"
        await until(lambda: part.exists() and part.stat().st_size > 64 * 1024, "a partial file")

        worker.kill9()  # mid-download: no cleanup of any kind
        kept = part.stat().st_size
        assert 0 < kept < size
        assert studio.jobs.deliveries.get(job_id, 0) == 0
        files.rate_bps = None

        again = Worker(config, tmp_path / "again.log")
        try:
            # The journal's `fail` comes with the first welcome: the studio does not wait
            # for its 30 s hold (`worker disconnected`) to run out.
            job = await until(
                lambda: (j := studio.get_job(job_id)) is not None and j.attempts == 1 and j,
                "the restarted worker's fail",
                limit=20.0,
            )
            assert studio.jobs.deliveries[job_id] >= 1
            job = await studio.wait_for_job(job_id, LIMIT_S)
            assert job.status == "done", job.error
            assert job.result["choices"][0]["message"]["content"] == TINY_ANSWER
            assert (job.attempts, job.worker_id) == (1, worker_id)
            assert studio.jobs.deliveries[job_id] == 2  # the fail, then the result
            assert f"reporting job {job_id} from before the restart: fail" in again.log
            assert RESTARTED_ERROR not in worker.log
            ranges = [r for r in files.requests if b"range: bytes=" in r.lower()]
            assert any(f"bytes={kept}-".encode() in r.lower() for r in ranges), ranges
            assert (models / "llama-cpp" / MODEL / "tiny.gguf").stat().st_size == size
            assert not part.exists()
            assert not list((config.parent / "jobs").glob("*.json"))  # cleaned on delivery
            assert again.stop() == 0  # SIGTERM: a clean stop
        finally:
            again.stop()
    finally:
        worker.stop()
        await files.close()


SAVER = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    from studio_worker.config.settings import Settings
    from studio_worker.config.store import ConfigStore

    store = ConfigStore(Path(sys.argv[1]))
    n = 0
    while True:
        n += 1
        store.save(
            Settings(vram_threshold_gb=float(n % 1000), worker_id=f"w-{n}", auth_token="t" * 4096)
        )
        if n == 20:
            print("saving", flush=True)
    """
)


@pytest.mark.parametrize("round_", range(3))
def test_kill_9_during_config_saves_leaves_a_whole_file(tmp_path: Path, round_: int) -> None:
    config = tmp_path / "config.toml"
    ConfigStore(config).save(Settings(vram_threshold_gb=1.0))
    saver = subprocess.Popen(
        [sys.executable, "-c", SAVER, str(config)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert saver.stdout is not None and saver.stdout.readline() == "saving\n"
    finally:
        saver.send_signal(signal.SIGKILL)
        saver.wait(10)
    loaded = ConfigStore(config).load()  # never half a file, never a parse error
    assert loaded.worker_id is not None and loaded.auth_token == "t" * 4096
    n = int(loaded.worker_id.removeprefix("w-"))
    assert n >= 20 and loaded.vram_threshold_gb == float(n % 1000)  # one save, whole
    assert tomllib.loads(config.read_text())["worker_id"] == loaded.worker_id
    assert (config.stat().st_mode & 0o777) == 0o600


async def test_kill_9_with_a_finished_result_held_delivers_it_after_the_restart(
    studio: StudioServer, tmp_path: Path
) -> None:
    """The studio is out of reach when the result is made; the worker is killed with the
    result in its outbox. The next process delivers that result, not a fail."""
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
    pytest.importorskip("gguf", reason="gguf is not installed")
    gguf = studio.shelf.root / "tiny.gguf"
    write_tiny_gguf(gguf, vocab_extra=20_000)
    assert studio.url is not None
    port = int(studio.url.rsplit(":", 1)[1])
    files, link = FaultProxy("127.0.0.1", port), FaultProxy("127.0.0.1", port)
    await files.start()
    await link.start()
    files.rate_bps = 512 * 1024
    config = tmp_path / "worker" / "config.toml"
    models = tmp_path / "models"
    ConfigStore(config).save(
        Settings(api_base_url=link.url, models_root=models, auto_update_enabled=False)
    )
    worker = Worker(config, tmp_path / "worker.log")
    try:
        await until(studio.pending_requests, "a register request")
        worker_id = studio.approve(studio.pending_requests()[0].id)
        model_file = {
            "role": "model",
            "url": f"{files.url}/files/tiny.gguf",
            "filename": "tiny.gguf",
            "sha256": hashlib.sha256(gguf.read_bytes()).hexdigest(),
        }
        source = {"engine": "llama-cpp", "files": [model_file], "cliDefaults": {"contextSize": 256}}
        task = {"kind": "llm", "messages": [{"role": "user", "content": "hello"}], "maxTokens": 32}
        job_id = studio.submit_job("llm", {**task, "temperature": 0}, MODEL, model_source=source)
        part = models / "llama-cpp" / MODEL / "tiny.gguf.part"
        await until(part.exists, "the download under way")

        link.refuse = True  # the studio goes out of reach ...
        link.drop()
        files.rate_bps = None  # ... while the download ends and the engine answers
        journal = config.parent / "jobs"

        def held() -> bool:
            entries = [json.loads(p.read_text()) for p in journal.glob("*.json")]
            return any(e["jobId"] == job_id and e["state"] == "held" for e in entries)

        await until(held, "the result held in the journal")
        worker.kill9()
        assert studio.jobs.deliveries.get(job_id, 0) == 0
        link.refuse = False

        again = Worker(config, tmp_path / "again.log")
        try:
            job = await studio.wait_for_job(job_id, LIMIT_S)
            assert job.status == "done", job.error
            assert job.result["choices"][0]["message"]["content"] == TINY_ANSWER
            assert (job.attempts, job.worker_id, studio.jobs.deliveries[job_id]) == (
                0,
                worker_id,
                1,
            )
            assert f"reporting job {job_id} from before the restart: completeJson" in again.log
            assert not list(journal.glob("*.json"))
            assert again.stop() == 0  # SIGTERM: a clean stop
        finally:
            again.stop()
    finally:
        worker.stop()
        await files.close()
        await link.close()


async def test_kill_9_mid_upload_uploads_the_kept_result_after_the_restart(
    studio: StudioServer, tmp_path: Path
) -> None:
    assert studio.url is not None
    link = FaultProxy("127.0.0.1", int(studio.url.rsplit(":", 1)[1]))
    await link.start()
    config = tmp_path / "worker" / "config.toml"
    ConfigStore(config).save(
        Settings(api_base_url=link.url, models_root=tmp_path / "models", auto_update_enabled=False)
    )
    worker = Worker(config, tmp_path / "worker.log")
    try:
        await until(studio.pending_requests, "a register request")
        worker_id = studio.approve(studio.pending_requests()[0].id)
        # A slow uplink and a result (12 MiB) bigger than the socket buffers: the kill
        # cuts the upload (what the kernel had buffered still leaves, then the cut).
        link.rate_bps = 1024 * 1024
        task = {"kind": "image", "prompt": "a lantern", "ext": "bmp", "width": 2048, "height": 2048}
        job_id = studio.submit_job("image", task)
        journal = config.parent / "jobs"

        def uploading() -> bool:
            entries = [json.loads(p.read_text()) for p in journal.glob("*.json")]
            kept = list(journal.glob("*.bin"))
            return bool(kept) and any(e["state"] == "uploading" for e in entries)

        await until(uploading, "the upload under way, its bytes kept")
        worker.kill9()
        kept = next(journal.glob("*.bin")).read_bytes()
        job = studio.get_job(job_id)
        assert job is not None and job.status == "running" and studio.jobs.deliveries == {}
        link.rate_bps = None

        again = Worker(config, tmp_path / "again.log")
        try:
            job = await studio.wait_for_job(job_id, LIMIT_S)
            assert (job.status, job.attempts, job.worker_id) == ("done", 0, worker_id)
            assert studio.jobs.deliveries[job_id] == 1
            assert job.result_path is not None and job.size == len(kept)
            assert job.mime == "image/bmp"
            assert f"uploading job {job_id} again, from before the restart" in again.log
            # cleaned once the worker has read the studio's 2xx
            await until(lambda: not list(journal.iterdir()), "the kept result cleared")
            assert again.stop() == 0  # SIGTERM: a clean stop
        finally:
            again.stop()
    finally:
        worker.stop()
        await link.close()
