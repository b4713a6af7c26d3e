"""Which real engines this install has, and how to build each one in its engine host.

Adding an engine is one line in `ROSTER`: the module that must be importable for it to
count as installed, and where its class lives. Engines missing from this install are
simply left out: their jobs fail with the "engine missing" message (registry.py).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio_worker.engines.availability import installed
from studio_worker.engines.host import HostedEngine
from studio_worker.engines.host_messages import EngineSpec


@dataclass(frozen=True, slots=True)
class RosterEntry:
    requires: str  # the top-level module the engine needs (checked without importing it)
    module: str
    qualname: str
    kwargs: Callable[[Path], Mapping[str, Any]] = lambda _root: {}

    def spec(self, models_root: Path) -> EngineSpec:
        return EngineSpec(self.module, self.qualname, dict(self.kwargs(models_root)))


ROSTER: tuple[RosterEntry, ...] = (
    RosterEntry(
        "llama_cpp", "studio_worker.engines.llm", "LlamaEngine", lambda r: {"models_root": r}
    ),
    RosterEntry("faster_whisper", "studio_worker.engines.stt", "WhisperEngine"),
    RosterEntry("stable_diffusion_cpp", "studio_worker.engines.image", "SdCppEngine"),
    RosterEntry("piper", "studio_worker.engines.tts", "PiperEngine"),
)


def installed_engines(
    models_root: Path, *, roster: tuple[RosterEntry, ...] = ROSTER
) -> list[HostedEngine]:
    """One hosted engine per roster entry whose library is installed here."""
    return [HostedEngine(entry.spec(models_root)) for entry in roster if installed(entry.requires)]
