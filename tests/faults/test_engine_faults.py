"""The engine's child process dies or runs out of memory mid-job: one job fails, once,
retryable; the worker, its session and the next job are untouched."""

from __future__ import annotations

from pathlib import Path

import pytest
from rig import fault_rig

from studio_worker.engines.host import EngineSpec, HostedEngine

SOURCE = {"engine": "llama-cpp", "files": []}


def llm(command: str) -> dict[str, object]:
    return {"kind": "llm", "messages": [{"role": "user", "content": command}]}


@pytest.mark.parametrize(
    ("command", "error"),
    [
        ("oom", "MemoryError"),
        ("oomkill", "killed by SIGKILL (out of memory, or killed by the OS or a person)"),
        ("segv", "SIGSEGV"),
    ],
)
async def test_an_engine_child_that_dies_or_runs_out_of_memory_costs_one_attempt(
    tmp_path: Path, command: str, error: str
) -> None:
    engine = HostedEngine(EngineSpec("faulty_engine", "FaultyEngine"))
    # One attempt per job: a retryable fail then ends the job, so its one outcome shows.
    async with fault_rig(tmp_path, llama=engine, max_attempts=1) as rig:
        job_id = rig.studio.submit_job("llm", llm(command), "faulty", model_source=SOURCE)
        job = await rig.outcome(job_id)
        assert (job.status, job.attempts, rig.deliveries(job_id)) == ("failed", 1, 1)
        assert job.error is not None and error in job.error, job.error
        assert job.error.endswith("(after 1 attempts)")  # the studio's mark of retryable
        (record,) = rig.daemon.status.snapshot().recent_jobs
        assert record.outcome == "failed"

        after = await rig.outcome(
            rig.studio.submit_job("llm", llm("ok"), "faulty", model_source=SOURCE)
        )
        assert after.status == "done" and after.result["pid"] != 0
        assert sum(1 for r in rig.proxy.requests if b"/connect" in r) == 1  # same session
