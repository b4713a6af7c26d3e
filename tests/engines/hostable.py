"""A scripted engine for the engine-host tests: it runs in the child and obeys the prompt.

The last message of an LLM task is a command: `ok`, `sleep <s>`, `stubborn <s>` (ignores
cancel), `segv`, `abort`, `exit <code>`, `raise`, `joberror`, `progress`, `log`.
A preload "loads" its model paths; a file named `bad.gguf` is refused, `segv.gguf` crashes.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time
from collections.abc import Mapping
from pathlib import Path

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import JobError, JobResult, JsonResult
from studio_worker.domain.tasks import JobOfferClaim, LlmTask, ModelSource
from studio_worker.engines.base import Progress

log = logging.getLogger("hostable")


class ScriptedEngine:
    def __init__(self, label: str = "scripted") -> None:
        self.label = label
        self.loads = 0
        self._resident: tuple[str, ...] | None = None

    @property
    def name(self) -> str:
        return "scripted"

    def models_per_kind(self) -> Mapping[TaskKind, list[str]]:
        return {TaskKind.LLM: [f"{self.label}:*"]}

    def resident(self) -> list[str]:
        return list(self._resident or ())

    def _load(self, model_paths: Mapping[str, Path]) -> None:
        key = tuple(sorted(str(p) for p in model_paths.values()))
        if key != self._resident:
            self.loads += 1
            self._resident = key

    def preload(self, source: ModelSource, model_paths: Mapping[str, Path]) -> None:
        if "bad.gguf" in model_paths:
            raise JobError("could not load model bad.gguf: not a GGUF", retryable=False)
        if "segv.gguf" in model_paths:
            os.kill(os.getpid(), signal.SIGSEGV)
        self._load(model_paths)

    def unload(self) -> None:
        self._resident = None

    def run(
        self,
        claim: JobOfferClaim,
        model_paths: Mapping[str, Path],
        progress: Progress,
        cancel: threading.Event,
    ) -> JobResult:
        self._load(model_paths)
        assert isinstance(claim.task, LlmTask)
        command, _, arg = claim.task.messages[-1].content.partition(" ")
        match command:
            case "sleep":
                deadline = time.monotonic() + float(arg)
                while time.monotonic() < deadline:
                    if cancel.wait(0.01):
                        raise JobError("cancelled", retryable=True)
            case "stubborn":
                time.sleep(float(arg))
            case "segv":
                os.kill(os.getpid(), signal.SIGSEGV)
            case "abort":
                os.abort()
            case "exit":
                os._exit(int(arg))
            case "raise":
                raise RuntimeError("engine bug")
            case "joberror":
                raise JobError("bad input", retryable=False)
            case "progress":
                for step in range(1, 5):
                    progress(step / 4, f"step {step}")
            case "log":
                log.warning("hello from the child", extra={"job_id": claim.job_id})
        return JsonResult({"pid": os.getpid(), "loads": self.loads, "label": self.label})
