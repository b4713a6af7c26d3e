from __future__ import annotations

import hashlib
import io
import itertools
import threading
import wave
from typing import Any

import pytest
from PIL import Image

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import (
    BinaryResult,
    EngineMissing,
    JsonResult,
    UnknownEngine,
)
from studio_worker.domain.tasks import JobOfferClaim
from studio_worker.engines.registry import EngineRegistry
from studio_worker.engines.synthetic import SyntheticEngine


def claim(task: dict[str, Any], engine: str = "synthetic") -> JobOfferClaim:
    return JobOfferClaim.model_validate(
        {
            "jobId": "j",
            "gameId": "g",
            "assetName": "a",
            "model": "m",
            "vramGbEstimate": 0,
            "task": task,
            "modelSource": {"engine": engine},
        }
    )


def run(task: dict[str, Any]) -> Any:
    return SyntheticEngine().run(claim(task), {}, lambda f, n: None, threading.Event())


@pytest.mark.parametrize(
    ("ext", "fmt"),
    [("webp", "WEBP"), ("png", "PNG"), ("jpg", "JPEG"), ("bmp", "BMP"), ("tiff-ish", "PNG")],
)
def test_image_is_a_real_picture_in_the_requested_format(ext: str, fmt: str) -> None:
    result = run({"kind": "image", "prompt": "a fox", "ext": ext, "width": 64, "height": 48})
    assert isinstance(result, BinaryResult)
    img = Image.open(io.BytesIO(result.data))
    assert img.format == fmt and img.size == (64, 48)
    assert result.ext == (ext if fmt != "PNG" or ext == "png" else "png")


def test_image_is_deterministic_and_prompt_dependent() -> None:
    a = run({"kind": "image", "prompt": "a fox", "ext": "png"}).data
    b = run({"kind": "image", "prompt": "a fox", "ext": "png"}).data
    c = run({"kind": "image", "prompt": "a cat", "ext": "png"}).data
    assert a == b and a != c


def test_llm_shape() -> None:
    result = run(
        {
            "kind": "llm",
            "messages": [
                {"role": "user", "content": "first"},
                {"role": "user", "content": "Name a dragon"},
            ],
        }
    )
    assert isinstance(result, JsonResult)
    value = result.value
    digest = hashlib.sha256(b"Name a dragon").hexdigest()[:16]
    assert value["object"] == "chat.completion" and value["model"] == "synthetic-llm"
    assert value["choices"][0]["message"] == {
        "role": "assistant",
        "content": f"[synthetic] reply to prompt #{digest}",
    }
    assert value["choices"][0]["finish_reason"] == "stop"
    usage = value["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


def test_stt_shape() -> None:
    url = "https://assets.example/a.wav"
    value = run({"kind": "audio_stt", "inputUrl": url}).value
    assert value == {
        "text": f"[synthetic] transcript of {hashlib.sha256(url.encode()).hexdigest()[:16]}",
        "language": "en",
        "duration": 1.0,
    }


def test_tts_is_a_one_second_16_bit_mono_wav_at_the_seeded_pitch() -> None:
    result = run({"kind": "audio_tts", "text": "hello"})
    assert result.ext == "wav"
    with wave.open(io.BytesIO(result.data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, 22050)
        assert wav.getnframes() == 22050
        frames = wav.readframes(22050)
    samples = [
        int.from_bytes(frames[i : i + 2], "little", signed=True) for i in range(0, len(frames), 2)
    ]
    assert max(samples) == pytest.approx(0.4 * 32767, rel=0.01)
    crossings = sum(1 for a, b in itertools.pairwise(samples) if a < 0 <= b)
    expected = 220 + hashlib.sha256(b"hello").digest()[0] * 660 / 255
    assert crossings == pytest.approx(expected, abs=2)


def test_video_is_an_animated_webp() -> None:
    result = run(
        {
            "kind": "video",
            "prompt": "a fox",
            "seconds": 1,
            "fps": 4,
            "width": 64,
            "height": 64,
            "ext": "mp4",
        }
    )
    assert result.ext == "webp"
    img = Image.open(io.BytesIO(result.data))
    assert img.format == "WEBP" and getattr(img, "n_frames", 1) == 4


def test_registry_routes_strictly() -> None:
    registry = EngineRegistry([SyntheticEngine()])
    assert registry.resolve("synthetic", "m").name == "synthetic"
    with pytest.raises(EngineMissing) as missing:
        registry.resolve("llama-cpp", "qwen")
    assert missing.value.retryable is True
    assert "no `llama` engine installed in this worker (model `qwen` requires it)" in str(
        missing.value
    )
    assert "pip install 'studio-worker[llm]'" in str(missing.value)
    with pytest.raises(UnknownEngine) as unknown:
        registry.resolve("quantum-diffusion", "m")
    assert unknown.value.retryable is False


def test_registry_advertises_all_kinds_in_order() -> None:
    registry = EngineRegistry([SyntheticEngine()])
    per_kind = registry.models_per_kind()
    assert list(per_kind) == list(TaskKind)
    assert per_kind[TaskKind.AUDIO_STT] == ["synthetic", "synthetic-stt"]
    assert registry.supported_models() == sorted(registry.supported_models())
    assert "synthetic-video" in registry.supported_models()
