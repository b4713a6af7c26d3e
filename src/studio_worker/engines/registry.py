"""The static engine roster and strict routing by `modelSource.engine` (protocol §4.5).

There is no fallback: a job runs on the engine its model source names or it fails.
A name no version of ours knows fails with `retryable: false`; a known engine that is not
installed here fails with `retryable: true` (another worker may have it).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from studio_worker.domain.capabilities import flat_models, models_per_kind
from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import EngineMissing, UnknownEngine
from studio_worker.engines.base import Engine

RELEASES_URL = "https://github.com/minis-gg/studio-worker/releases/latest"


@dataclass(frozen=True, slots=True)
class KnownEngine:
    internal: str  # the backend name used in messages
    extra: str | None  # the pip extra that installs it, None when not installable


# Every `modelSource.engine` value any version of ours understands.
KNOWN_ENGINES: Mapping[str, KnownEngine] = {
    "synthetic": KnownEngine("synthetic", None),
    "llama-cpp": KnownEngine("llama", "llm"),
    "sd-cpp": KnownEngine("sdcpp", "image"),
    "faster-whisper": KnownEngine("whisper", "stt"),
    "whisper": KnownEngine("whisper", "stt"),
    "piper": KnownEngine("tts", "tts"),
    "onnx": KnownEngine("onnx", None),
    "parakeet": KnownEngine("parakeet", None),
}


def missing_engine_message(wire_name: str, model: str) -> str:
    known = KNOWN_ENGINES[wire_name]
    how = f"Install the full release build from {RELEASES_URL}"
    if known.extra:
        how += f", or add this engine with `pip install 'studio-worker[{known.extra}]'`"
    return (
        f"no `{known.internal}` engine installed in this worker "
        f"(model `{model}` requires it). {how}."
    )


class EngineRegistry:
    def __init__(self, engines: Iterable[Engine]) -> None:
        self._by_internal = {engine.name: engine for engine in engines}

    @property
    def names(self) -> list[str]:
        return list(self._by_internal)

    @property
    def engines(self) -> list[Engine]:
        return list(self._by_internal.values())

    def named(self, name: str) -> Engine | None:
        """The engine called `name` (internal, `llama`) or serving it (wire, `llama-cpp`)."""
        known = KNOWN_ENGINES.get(name)
        return self._by_internal.get(name) or (
            self._by_internal.get(known.internal) if known else None
        )

    @staticmethod
    def wire_names(internal: str) -> list[str]:
        """The `modelSource.engine` values routed to the engine called `internal`."""
        return [wire for wire, known in KNOWN_ENGINES.items() if known.internal == internal]

    def resolve(self, wire_name: str, model: str) -> Engine:
        known = KNOWN_ENGINES.get(wire_name)
        if known is None:
            raise UnknownEngine(
                f"unknown engine `{wire_name}` (model `{model}`): this worker knows "
                f"{', '.join(sorted(KNOWN_ENGINES))}; update the worker if the studio "
                "added a new engine"
            )
        engine = self._by_internal.get(known.internal)
        if engine is None:
            raise EngineMissing(missing_engine_message(wire_name, model))
        return engine

    def models_per_kind(self) -> dict[TaskKind, list[str]]:
        merged: dict[TaskKind, list[str]] = {}
        for engine in self._by_internal.values():
            for kind, ids in engine.models_per_kind().items():
                merged.setdefault(kind, []).extend(ids)
        return models_per_kind(merged)

    def supported_models(self) -> list[str]:
        return flat_models(self.models_per_kind())

    def close(self) -> None:
        """Stop every engine process (the daemon is exiting)."""
        for engine in self._by_internal.values():
            close = getattr(engine, "close", None)
            if callable(close):
                close()

    def task_kinds(self) -> list[TaskKind]:
        return [kind for kind in TaskKind if kind in self.models_per_kind()]
