"""The engine host runs a real child process: crashes cost one job, never the parent."""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from studio_worker.domain.results import JobError, JsonResult
from studio_worker.domain.tasks import JobOfferClaim
from studio_worker.engines.host import EngineSpec, HostedEngine, describe_exit

SPEC = EngineSpec("hostable", "ScriptedEngine", {"label": "t"})


def claim(command: str, job_id: str = "job-1") -> JobOfferClaim:
    return JobOfferClaim.model_validate(
        {
            "jobId": job_id,
            "gameId": "g",
            "assetName": "a",
            "model": "m",
            "vramGbEstimate": 1,
            "task": {"kind": "llm", "messages": [{"role": "user", "content": command}]},
            "modelSource": {"engine": "llama-cpp", "files": []},
        }
    )


@pytest.fixture(scope="module")
def engine() -> Iterator[HostedEngine]:
    hosted = HostedEngine(SPEC)
    yield hosted
    hosted.close()


def run(engine: HostedEngine, command: str, **kw: Any) -> dict[str, Any]:
    paths = kw.pop("paths", {"m.gguf": Path("/models/m.gguf")})
    cancel = kw.pop("cancel", threading.Event())
    progress = kw.pop("progress", lambda f, n: None)
    result = engine.run(claim(command, **kw), paths, progress, cancel)
    assert isinstance(result, JsonResult)
    value: dict[str, Any] = result.value
    return value


def test_runs_in_a_child_process_with_name_and_models_from_the_parent(
    engine: HostedEngine,
) -> None:
    assert engine.name == "scripted"
    assert dict(engine.models_per_kind()) == {"llm": ["t:*"]}
    out = run(engine, "ok")
    assert out["pid"] != os.getpid()
    assert out["pid"] == engine.host.pid
    assert out["label"] == "t"


def test_the_model_stays_resident_between_jobs(engine: HostedEngine) -> None:
    first = run(engine, "ok", paths={"a.gguf": Path("/models/a.gguf")})
    second = run(engine, "ok", paths={"a.gguf": Path("/models/a.gguf")})
    assert second["loads"] == first["loads"]
    assert second["pid"] == first["pid"]
    third = run(engine, "ok", paths={"b.gguf": Path("/models/b.gguf")})
    assert third["loads"] == first["loads"] + 1
    assert engine.host.loads == third["loads"]


def test_progress_crosses_the_channel_in_order(engine: HostedEngine) -> None:
    seen: list[tuple[float, str]] = []
    run(engine, "progress", progress=lambda f, n: seen.append((f, n)))
    assert seen == [(0.25, "step 1"), (0.5, "step 2"), (0.75, "step 3"), (1.0, "step 4")]


def test_child_logs_reach_the_parent_logger_with_the_job_id(
    engine: HostedEngine, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.INFO):
        run(engine, "log", job_id="job-log")
    lines = [r for r in caplog.records if r.name == "hostable"]
    assert [r.getMessage() for r in lines] == ["hello from the child"]
    assert lines[0].levelno == logging.WARNING
    assert getattr(lines[0], "job_id", None) == "job-log"


def test_job_errors_keep_their_retryable_flag_and_the_child(engine: HostedEngine) -> None:
    pid = engine.host.pid or run(engine, "ok")["pid"]
    with pytest.raises(JobError) as info:
        run(engine, "joberror")
    assert (info.value.message, info.value.retryable) == ("bad input", False)
    with pytest.raises(JobError) as info:
        run(engine, "raise")
    assert info.value.retryable is True
    assert info.value.message == "RuntimeError: engine bug"
    assert run(engine, "ok")["pid"] == pid


@pytest.mark.parametrize(
    ("command", "reason"),
    [
        ("segv", "killed by SIGSEGV (a crash in native code)"),
        ("abort", "killed by SIGABRT (the native library aborted)"),
        ("exit 3", "exited with code 3"),
    ],
)
def test_a_dying_child_fails_one_job_retryable_and_is_restarted(
    engine: HostedEngine, command: str, reason: str
) -> None:
    before = run(engine, "ok")["pid"]
    starts = engine.host.starts
    with pytest.raises(JobError) as info:
        run(engine, command)
    assert info.value.retryable is True
    assert reason in info.value.message
    assert "the engine was restarted" in info.value.message
    assert engine.host.starts == starts + 1
    after = run(engine, "ok")
    assert after["pid"] != before
    assert after["loads"] == 1  # a fresh child has to load the model again


def test_a_child_killed_from_outside_mid_job(engine: HostedEngine) -> None:
    pid = run(engine, "ok")["pid"]
    killer = threading.Timer(0.3, os.kill, (pid, signal.SIGKILL))
    killer.start()
    started = time.monotonic()
    with pytest.raises(JobError) as info:
        run(engine, "sleep 30")
    killer.join()
    assert time.monotonic() - started < 5
    assert "killed by SIGKILL (out of memory, or killed by the OS or a person)" in (
        info.value.message
    )
    assert run(engine, "ok")["pid"] != pid


def test_cancel_reaches_the_engine_between_steps(engine: HostedEngine) -> None:
    cancel = threading.Event()
    threading.Timer(0.2, cancel.set).start()
    pid = run(engine, "ok")["pid"]
    with pytest.raises(JobError, match="cancelled"):
        run(engine, "sleep 30", cancel=cancel)
    assert run(engine, "ok")["pid"] == pid  # a cooperative cancel keeps the child


def test_an_engine_that_ignores_cancel_is_stopped_after_the_grace() -> None:
    hosted = HostedEngine(SPEC)
    hosted.host._cancel_grace_s = 0.3
    try:
        cancel = threading.Event()
        cancel.set()
        started = time.monotonic()
        with pytest.raises(JobError, match="did not stop in time"):
            run(hosted, "stubborn 30", cancel=cancel)
        assert time.monotonic() - started < 5
        assert run(hosted, "ok")["label"] == "t"
    finally:
        hosted.close()


def test_an_engine_that_cannot_be_built_fails_the_job_clearly() -> None:
    hosted = HostedEngine.__new__(HostedEngine)
    from studio_worker.engines.host import EngineHost

    hosted.host = EngineHost(EngineSpec("hostable_missing_module", "X"), "ghost")
    with pytest.raises(JobError) as info:
        hosted.run(claim("ok"), {}, lambda f, n: None, threading.Event())
    assert info.value.retryable is True
    assert "engine `ghost` could not start: ModuleNotFoundError" in info.value.message
    hosted.host.stop()


def test_close_stops_the_child() -> None:
    hosted = HostedEngine(SPEC)
    pid = run(hosted, "ok")["pid"]
    hosted.close()
    assert hosted.host.pid is None
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


def test_exit_descriptions() -> None:
    assert describe_exit(-9).startswith("killed by SIGKILL")
    assert describe_exit(1) == "exited with code 1"
    assert describe_exit(-200) == "killed by signal 200"
