"""What an engine hands back, and how a failure is classified (protocol §3.8)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from studio_worker.domain.kinds import TaskKind

# Kinds whose results are bytes delivered by multipart `complete` (protocol §2.3).
BINARY_KINDS = frozenset({TaskKind.IMAGE, TaskKind.AUDIO_TTS, TaskKind.VIDEO})

_MIME = {
    "png": "image/png",
    "webp": "image/webp",
    "gif": "image/gif",
    "wav": "audio/wav",
    "mp3": "audio/mpeg",
    "mp4": "video/mp4",
    # Beyond upstream's map (protocol §10 item 1): the studio stores bytes either way.
    "jpg": "image/jpeg",
    "jpeg": "image/jpeg",
    "bmp": "image/bmp",
    "webm": "video/webm",
    "ogg": "audio/ogg",
    "flac": "audio/flac",
}


def mime_for_ext(ext: str) -> str:
    return _MIME.get(ext.lower(), "application/octet-stream")


@dataclass(frozen=True, slots=True)
class BinaryResult:
    data: bytes
    ext: str


@dataclass(frozen=True, slots=True)
class JsonResult:
    value: Any


JobResult = BinaryResult | JsonResult


class JobError(Exception):
    """A job that was accepted could not be finished. `retryable` travels in `fail`."""

    retryable: bool = True

    def __init__(self, message: str, *, retryable: bool | None = None) -> None:
        super().__init__(message)
        if retryable is not None:
            self.retryable = retryable

    @property
    def message(self) -> str:
        return str(self.args[0]) if self.args else type(self).__name__


class CannotServe(JobError):
    """The engine exists but cannot serve this task kind: another try would fail the same."""

    retryable = False


class UnknownEngine(JobError):
    """No version of this worker knows the engine name: terminal."""

    retryable = False


class EngineMissing(JobError):
    """A known engine that is not installed here: another worker may have it."""

    retryable = True
