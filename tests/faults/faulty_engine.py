"""An engine for the engine host's child that fails the way real ones do, on cue.

It answers `llama-cpp` jobs (name `llama`). The last message of the task is the command:
`ok`, `oom` (the allocation fails: MemoryError), `oomkill` (the OS's out-of-memory
killer: SIGKILL), `segv` (native crash).
"""

from __future__ import annotations

import os
import signal
import threading
from collections.abc import Mapping
from pathlib import Path

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import JobResult, JsonResult
from studio_worker.domain.tasks import JobOfferClaim, LlmTask
from studio_worker.engines.base import Progress


class FaultyEngine:
    @property
    def name(self) -> str:
        return "llama"

    def models_per_kind(self) -> Mapping[TaskKind, list[str]]:
        return {TaskKind.LLM: ["faulty:*"]}

    def run(
        self,
        claim: JobOfferClaim,
        model_paths: Mapping[str, Path],
        progress: Progress,
        cancel: threading.Event,
    ) -> JobResult:
        assert isinstance(claim.task, LlmTask)
        match claim.task.messages[-1].content:
            case "oom":
                hog = bytearray(1 << 60)  # no machine has an exbibyte: MemoryError
                del hog
            case "oomkill":
                os.kill(os.getpid(), signal.SIGKILL)
            case "segv":
                os.kill(os.getpid(), signal.SIGSEGV)
        return JsonResult({"object": "chat.completion", "pid": os.getpid()})
