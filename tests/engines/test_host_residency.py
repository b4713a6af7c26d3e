"""Residency through the engine host: what the child holds, preloads, and unload."""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from studio_worker.domain.results import JobError, JsonResult
from studio_worker.domain.tasks import JobOfferClaim, ModelSource
from studio_worker.engines.host import EngineSpec, HostedEngine

SPEC = EngineSpec("hostable", "ScriptedEngine", {"label": "r"})
SOURCE = ModelSource.model_validate({"engine": "llama-cpp", "files": []})
A = {"a.gguf": Path("/models/a/a.gguf")}
B = {"b.gguf": Path("/models/b/b.gguf")}


@pytest.fixture
def engine() -> Iterator[HostedEngine]:
    hosted = HostedEngine(SPEC)
    yield hosted
    hosted.close()


def claim(command: str) -> JobOfferClaim:
    return JobOfferClaim.model_validate(
        {
            "jobId": "job-r",
            "gameId": "g",
            "assetName": "a",
            "model": "m",
            "vramGbEstimate": 1,
            "task": {"kind": "llm", "messages": [{"role": "user", "content": command}]},
            "modelSource": {"engine": "llama-cpp", "files": []},
        }
    )


def run(engine: HostedEngine, command: str, paths: dict[str, Path]) -> dict[str, Any]:
    result = engine.run(claim(command), paths, lambda f, n: None, threading.Event())
    assert isinstance(result, JsonResult)
    value: dict[str, Any] = result.value
    return value


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_nothing_is_resident_before_the_first_job_and_no_process_runs(
    engine: HostedEngine,
) -> None:
    assert engine.resident() == []
    assert (engine.host.running, engine.host.pid) == (False, None)


def test_each_job_reports_what_the_child_holds_loaded(engine: HostedEngine) -> None:
    run(engine, "ok", A)
    assert engine.resident() == ["/models/a/a.gguf"]
    assert engine.host.running
    run(engine, "ok", B)
    assert engine.resident() == ["/models/b/b.gguf"]
    with pytest.raises(JobError):
        run(engine, "joberror", A)  # loaded, then the job failed: the model stays
    assert engine.resident() == ["/models/a/a.gguf"]


def test_a_preload_loads_without_a_job_and_the_next_job_finds_it_loaded(
    engine: HostedEngine,
) -> None:
    assert engine.host.preload(SOURCE, A) == ("/models/a/a.gguf",)
    assert engine.resident() == ["/models/a/a.gguf"]
    assert engine.host.loads == 1
    engine.preload(SOURCE, A)  # already resident: not loaded again
    assert engine.host.loads == 1
    assert run(engine, "ok", A)["loads"] == 1


def test_a_refused_preload_says_why_and_keeps_the_child(engine: HostedEngine) -> None:
    engine.preload(SOURCE, A)
    pid = engine.host.pid
    with pytest.raises(JobError) as info:
        engine.preload(SOURCE, {"bad.gguf": Path("/models/bad.gguf")})
    assert (info.value.message, info.value.retryable) == (
        "could not load model bad.gguf: not a GGUF",
        False,
    )
    assert engine.host.pid == pid
    assert engine.resident() == ["/models/a/a.gguf"]


def test_a_preload_that_kills_the_child_fails_retryable_and_a_fresh_child_waits(
    engine: HostedEngine,
) -> None:
    engine.preload(SOURCE, A)
    pid = engine.host.pid
    assert pid is not None
    with pytest.raises(JobError) as info:
        engine.preload(SOURCE, {"segv.gguf": Path("/models/segv.gguf")})
    assert info.value.retryable is True
    assert "killed by SIGSEGV" in info.value.message
    assert "while loading the model" in info.value.message
    assert engine.resident() == []
    assert engine.host.pid not in (None, pid)
    assert run(engine, "ok", A)["loads"] == 1


def test_unload_stops_the_child_and_the_next_job_starts_a_fresh_one(
    engine: HostedEngine,
) -> None:
    pid = run(engine, "ok", A)["pid"]
    assert engine.host.unload() == pid
    assert gone(pid)
    assert engine.resident() == []
    assert (engine.host.running, engine.host.pid) == (False, None)
    assert engine.host.unload() is None  # nothing running: nothing to stop
    after = run(engine, "ok", A)
    assert after["pid"] != pid and after["loads"] == 1
    assert engine.resident() == ["/models/a/a.gguf"]


def test_a_child_that_dies_between_jobs_holds_nothing(engine: HostedEngine) -> None:
    pid = run(engine, "ok", A)["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10
    while engine.host.running:
        assert time.monotonic() < deadline, "the killed child still counts as running"
        time.sleep(0.02)
    assert engine.resident() == []
