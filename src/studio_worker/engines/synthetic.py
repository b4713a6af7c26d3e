"""The synthetic engine (protocol §5.6): deterministic, real bytes, for CI and smoke tests.

Only ever used when `modelSource.engine == "synthetic"`: it never stands in for a real model.
"""

from __future__ import annotations

import hashlib
import io
import math
import struct
import threading
import wave
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import BinaryResult, JobError, JobResult, JsonResult
from studio_worker.domain.tasks import (
    ImageTask,
    JobOfferClaim,
    LlmTask,
    ModelSource,
    SttTask,
    TtsTask,
    VideoTask,
)
from studio_worker.engines.base import Progress

if TYPE_CHECKING:
    from PIL import Image

SAMPLE_RATE = 22_050
MAX_SIDE = 2048
MIN_SIDE = 16
VIDEO_FPS = 8
MAX_VIDEO_FRAMES = 48

# Pillow format names for the extensions a synthetic image can honestly be encoded as.
_IMAGE_FORMATS = {"webp": "WEBP", "png": "PNG", "jpg": "JPEG", "jpeg": "JPEG", "bmp": "BMP"}


def _digest(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()


def _side(value: int) -> int:
    return max(MIN_SIDE, min(MAX_SIDE, value))


def pattern(prompt: str, width: int, height: int, phase: float = 0.0) -> Image.Image:
    """A smooth colour field seeded by sha256(prompt): same prompt, same pixels."""
    from PIL import Image  # on first use: an idle worker does not hold Pillow

    seed = _digest(prompt)
    fx, fy = 1 + seed[0] % 7, 1 + seed[1] % 7
    base = (seed[2], seed[3], seed[4])
    small_w, small_h = min(width, 32), min(height, 32)
    img = Image.new("RGB", (small_w, small_h))
    pixels = []
    for y in range(small_h):
        for x in range(small_w):
            u, v = x / small_w, y / small_h
            wave_ = math.sin(2 * math.pi * (fx * u + phase)) * math.cos(2 * math.pi * fy * v)
            pixels.append(
                tuple(
                    int((c + 96 * wave_ + 255 * (u if i == 0 else v)) % 256)
                    for i, c in enumerate(base)
                )
            )
    img.putdata(pixels)
    return img.resize((width, height), Image.Resampling.BILINEAR)


def encode_image(img: Image.Image, ext: str) -> BinaryResult:
    ext = ext.lower()
    fmt = _IMAGE_FORMATS.get(ext)
    if fmt is None:  # a format we cannot encode is delivered as PNG, labelled honestly
        ext, fmt = "png", "PNG"
    buf = io.BytesIO()
    img.save(buf, format=fmt)
    return BinaryResult(buf.getvalue(), ext)


def sine_wav(text: str, seconds: float = 1.0) -> bytes:
    """16-bit mono 22 050 Hz sine at `220 + byte0 * 660/255` Hz, amplitude 0.4."""
    freq = 220 + _digest(text)[0] * 660 / 255
    count = int(SAMPLE_RATE * seconds)
    frames = b"".join(
        struct.pack("<h", int(0.4 * 32767 * math.sin(2 * math.pi * freq * n / SAMPLE_RATE)))
        for n in range(count)
    )
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(SAMPLE_RATE)
        out.writeframes(frames)
    return buf.getvalue()


def llm_result(task: LlmTask) -> dict[str, Any]:
    text = task.messages[-1].content if task.messages else ""
    answer = f"[synthetic] reply to prompt #{_digest(text).hex()[:16]}"
    prompt_tokens = sum(len(m.content.split()) for m in task.messages) + len(
        (task.system or "").split()
    )
    completion_tokens = min(len(answer.split()), task.max_tokens)
    return {
        "object": "chat.completion",
        "model": "synthetic-llm",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": answer},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }


def stt_result(task: SttTask) -> dict[str, Any]:
    return {
        "text": f"[synthetic] transcript of {_digest(task.input_url).hex()[:16]}",
        "language": task.language or "en",
        "duration": 1.0,
    }


def video_result(task: VideoTask) -> BinaryResult:
    """An animated WebP of the seeded pattern drifting: real frames, honest ext."""
    width, height = _side(task.width), _side(task.height)
    fps = task.fps or VIDEO_FPS
    count = max(1, min(MAX_VIDEO_FRAMES, round(task.seconds * fps)))
    frames = [pattern(task.prompt, width, height, phase=i / count) for i in range(count)]
    buf = io.BytesIO()
    frames[0].save(
        buf,
        format="WEBP",
        save_all=True,
        append_images=frames[1:],
        duration=max(1, round(1000 / fps)),
        loop=0,
    )
    return BinaryResult(buf.getvalue(), "webp")


class SyntheticEngine:
    name = "synthetic"
    # Kinds answered in microseconds (a small JSON object): the dispatcher calls `run`
    # for these on the event loop, where a thread hop would cost more than the work.
    # Images, audio and video encode real bytes (milliseconds and up): off the loop.
    inline_kinds = frozenset({TaskKind.LLM, TaskKind.AUDIO_STT})

    def models_per_kind(self) -> Mapping[TaskKind, list[str]]:
        return {kind: ["synthetic", f"synthetic-{kind.short}"] for kind in TaskKind}

    def resident(self) -> list[str]:
        return []  # nothing to load: every answer is computed

    def preload(self, source: ModelSource, model_paths: Mapping[str, Path]) -> None:
        raise JobError("the synthetic engine has no model to load", retryable=False)

    def unload(self) -> None:
        pass

    def run(
        self,
        claim: JobOfferClaim,
        model_paths: Mapping[str, Path],
        progress: Progress,
        cancel: threading.Event,
    ) -> JobResult:
        task = claim.task
        progress(0.0, "synthetic: start")
        result: JobResult
        match task:
            case ImageTask():
                img = pattern(task.prompt, _side(task.width), _side(task.height))
                result = encode_image(img, task.ext)
            case LlmTask():
                result = JsonResult(llm_result(task))
            case SttTask():
                result = JsonResult(stt_result(task))
            case TtsTask():
                # 16-bit PCM WAV whatever `ext` asked for: the label stays honest.
                result = BinaryResult(sine_wav(task.text), "wav")
            case VideoTask():
                result = video_result(task)
        progress(1.0, "synthetic: done")
        return result
