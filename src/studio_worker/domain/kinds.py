"""Task kinds (protocol §4.1): the wire strings and their canonical order."""

from __future__ import annotations

from enum import StrEnum


class TaskKind(StrEnum):
    IMAGE = "image"
    LLM = "llm"
    AUDIO_STT = "audio_stt"
    AUDIO_TTS = "audio_tts"
    VIDEO = "video"

    @property
    def short(self) -> str:
        """The suffix of the synthetic model ids: `synthetic-<short>` (protocol §4.1)."""
        return _SHORT[self]


_SHORT = {
    TaskKind.IMAGE: "image",
    TaskKind.LLM: "llm",
    TaskKind.AUDIO_STT: "stt",
    TaskKind.AUDIO_TTS: "tts",
    TaskKind.VIDEO: "video",
}

ALL_KINDS: tuple[TaskKind, ...] = tuple(TaskKind)
