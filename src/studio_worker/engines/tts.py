"""The piper engine: text to speech with piper voices (ONNX), protocol §5.4.

piper, onnxruntime and numpy are imported only when a voice is loaded or spoken: the
parent process builds this class just to read `models_per_kind()`.

A voice is two files of the model source: the `.onnx` network (role `model`, else the
first `.onnx`) and its `.onnx.json` config (any role). The config is read first, so a
request the voice cannot serve (an unknown speaker, another language) is refused before
anything is loaded. Text is phonemised once, then spoken sentence by sentence so progress
moves per sentence and a cancel lands between two sentences. The last loaded voice stays
resident for the next job.

Output: `wav` (16-bit mono PCM at the voice's own rate) is written here; `mp3` (LAME VBR),
`ogg` (Vorbis: the compressed format every game engine imports) and `flac` are encoded by
the bundled ffmpeg (engines/ffmpeg.py).
"""

from __future__ import annotations

import importlib
import io
import json
import logging
import math
import threading
import wave
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import BinaryResult, CannotServe, JobError, JobResult
from studio_worker.domain.tasks import JobOfferClaim, ModelFile, ModelSource, TtsTask
from studio_worker.engines.base import Progress, check_cancel, no_progress
from studio_worker.engines.ffmpeg import run_ffmpeg
from studio_worker.engines.resident import Residency

log = logging.getLogger(__name__)

WILDCARD = "piper:*"
MIN_SPEED = 0.25
MAX_SPEED = 4.0
MAX_TEXT_CHARS = 100_000
DEFAULT_VOICES = frozenset({"", "default"})
MAX_SPEAKERS_LISTED = 12

# ext -> ffmpeg output arguments (the input is raw s16le mono at the voice's rate). Each
# output goes to a temporary file so the muxer can seek back and finish its header: the
# mp3 Xing/LAME frame (exact duration, gapless playback) and the FLAC STREAMINFO.
ENCODERS: Mapping[str, tuple[str, ...]] = {
    "mp3": ("-c:a", "libmp3lame", "-q:a", "4", "-f", "mp3"),
    "ogg": ("-c:a", "libvorbis", "-q:a", "4", "-f", "ogg"),
    "flac": ("-c:a", "flac", "-f", "flac"),
}
SUPPORTED_EXTS = ("wav", *ENCODERS)


# ---------------------------------------------------------------------------------------
# the voice files, its config, and what a request asks of it
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class VoiceFiles:
    model: Path
    config: Path


def voice_files(files: Sequence[ModelFile], model_paths: Mapping[str, Path]) -> VoiceFiles:
    """The `.onnx` network and its `.onnx.json` config among the model source's files."""
    onnx = [f for f in files if f.filename.lower().endswith(".onnx")]
    model = next((f for f in onnx if f.role == "model"), onnx[0] if onnx else None)
    if model is None:
        raise JobError("piper modelSource has no .onnx voice file (role `model`)", retryable=False)
    configs = [f for f in files if f.filename.lower().endswith(".json")]
    config = next((f for f in configs if f.filename == f"{model.filename}.json"), None)
    if config is None and len(configs) == 1:
        config = configs[0]
    if config is None:
        raise JobError(
            f"piper modelSource has no voice config: list {model.filename}.json "
            "(any role) next to the .onnx",
            retryable=False,
        )
    return VoiceFiles(_local(model, model_paths), _local(config, model_paths))


def _local(file: ModelFile, model_paths: Mapping[str, Path]) -> Path:
    path = model_paths.get(file.filename)
    if path is None or not path.is_file():
        raise JobError(f"voice file {file.filename} was not provided", retryable=True)
    return path


@dataclass(frozen=True, slots=True)
class VoiceConfig:
    """What the engine reads from a voice's `.onnx.json` before loading anything."""

    name: str
    sample_rate: int
    num_speakers: int
    speaker_id_map: Mapping[str, int]
    default_speaker_id: int
    language: str | None  # e.g. `en_US`, from `language.code` else `espeak.voice`
    length_scale: float


def read_voice_config(path: Path, name: str) -> VoiceConfig:
    try:
        raw = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(raw, dict):
            raise ValueError("not a JSON object")
        language = raw.get("language") or {}
        code = language.get("code") if isinstance(language, dict) else None
        espeak = raw.get("espeak") or {}
        inference = raw.get("inference") or {}
        speakers = raw.get("speaker_id_map") or {}
        return VoiceConfig(
            name=name,
            sample_rate=int(raw["audio"]["sample_rate"]),
            num_speakers=int(raw.get("num_speakers", 1)),
            speaker_id_map={str(k): int(v) for k, v in speakers.items()},
            default_speaker_id=int(raw.get("default_speaker_id", 0)),
            language=code or (espeak.get("voice") if isinstance(espeak, dict) else None),
            length_scale=float(inference.get("length_scale", 1.0)),
        )
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise JobError(
            f"voice config {path.name} is not a piper voice config: {exc}", retryable=False
        ) from exc


def speaker_id(config: VoiceConfig, voice: str) -> int | None:
    """The speaker id `voice` names on this voice; None on a single-speaker voice.

    A single-speaker voice is the voice whatever `voice` says. On a multi-speaker voice,
    `default` (or empty) is the config's default speaker; otherwise a name from
    `speaker_id_map` or a numeric id below `num_speakers`.
    """
    if config.num_speakers <= 1:
        return None
    wanted = voice.strip()
    if wanted.lower() in DEFAULT_VOICES:
        return config.default_speaker_id
    if wanted in config.speaker_id_map:
        return config.speaker_id_map[wanted]
    if wanted.isdigit() and int(wanted) < config.num_speakers:
        return int(wanted)
    names = sorted(config.speaker_id_map, key=lambda n: config.speaker_id_map[n])
    listed = ", ".join(names[:MAX_SPEAKERS_LISTED])
    if len(names) > MAX_SPEAKERS_LISTED:
        listed += f", … ({len(names)} in all)"
    raise JobError(
        f"voice {config.name} has no speaker `{wanted}`: use a speaker name"
        + (f" ({listed})" if listed else "")
        + f" or an id 0–{config.num_speakers - 1}, or `default`",
        retryable=False,
    )


def _primary(tag: str) -> str:
    return tag.strip().replace("_", "-").split("-")[0].lower()


def check_language(config: VoiceConfig, language: str | None) -> None:
    """A requested language must be the voice's own (compared on the primary subtag)."""
    if not language or not language.strip() or config.language is None:
        return
    if _primary(language) != _primary(config.language):
        raise JobError(
            f"voice {config.name} speaks {config.language}, not {language.strip()}: "
            "choose a voice of that language",
            retryable=False,
        )


def length_scale(config: VoiceConfig, speed: float | None) -> float:
    """piper's length_scale for `speed` (1 = the voice's own pace, 2 = twice as fast)."""
    if speed is None:
        return config.length_scale
    if not math.isfinite(speed) or not MIN_SPEED <= speed <= MAX_SPEED:
        raise JobError(
            f"speed {speed} is out of range: use {MIN_SPEED}–{MAX_SPEED:g} "
            "(1 = normal, 2 = twice as fast)",
            retryable=False,
        )
    return config.length_scale / speed


def output_ext(ext: str) -> str:
    wanted = ext.strip().lower().lstrip(".")
    if wanted not in SUPPORTED_EXTS:
        raise JobError(
            f"audio_tts cannot write `{ext}`: supported are {', '.join(SUPPORTED_EXTS)}",
            retryable=False,
        )
    return wanted


def check_text(text: str) -> str:
    if not text.strip():
        raise JobError("text is empty: nothing to speak", retryable=False)
    if len(text) > MAX_TEXT_CHARS:
        raise JobError(
            f"text is {len(text)} characters, the limit is {MAX_TEXT_CHARS}: split it",
            retryable=False,
        )
    return text


# ---------------------------------------------------------------------------------------
# audio containers
# ---------------------------------------------------------------------------------------


def wav_bytes(pcm: bytes, sample_rate: int) -> bytes:
    """16-bit mono PCM as a WAV file."""
    out = io.BytesIO()
    with wave.open(out, "wb") as wav:
        wav.setnchannels(1)
        wav.setsampwidth(2)
        wav.setframerate(sample_rate)
        wav.writeframes(pcm)
    return out.getvalue()


def encode(pcm: bytes, sample_rate: int, ext: str, cancel: threading.Event | None = None) -> bytes:
    """16-bit mono PCM at `sample_rate` as a `wav`, `mp3`, `ogg` (Vorbis) or `flac` file."""
    if ext == "wav":
        return wav_bytes(pcm, sample_rate)
    args = ["-f", "s16le", "-ar", str(sample_rate), "-ac", "1", "-i", "pipe:0"]
    return run_ffmpeg([*args, *ENCODERS[ext]], pcm, output_suffix=f".{ext}", cancel=cancel)


# ---------------------------------------------------------------------------------------
# the engine
# ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Key:
    model: Path
    config: Path
    device: str


class PiperEngine(Residency[_Key, Any]):
    """piper-tts; serves `audio_tts` tasks of `piper` model sources."""

    name = "tts"

    def __init__(self, *, device: str | None = None, noise: bool = True) -> None:
        """`device`: `cpu` or `cuda` (default: cuda when onnxruntime offers it).

        `noise=False` turns off piper's random noise: the same text then gives the same
        audio every time (reproducible output; tests), at a flatter delivery.
        """
        self._device = device
        self._noise = noise
        super().__init__()

    def models_per_kind(self) -> Mapping[TaskKind, list[str]]:
        return {TaskKind.AUDIO_TTS: [WILDCARD]}

    # -- residency ------------------------------------------------------------------------

    @property
    def loaded(self) -> Path | None:
        key = self._key
        return key.model if key else None

    def _files(self, key: _Key) -> list[Path]:
        return [key.model, key.config]

    def preload(self, source: ModelSource, model_paths: Mapping[str, Path]) -> None:
        files = voice_files(source.files, model_paths)
        read_voice_config(files.config, files.model.name)  # refused as a job would be
        with self._lock:
            self._ensure(files, no_progress)

    def _placement(self) -> str:
        if self._device is not None:
            return self._device
        onnxruntime = importlib.import_module("onnxruntime")
        providers = onnxruntime.get_available_providers()
        return "cuda" if "CUDAExecutionProvider" in providers else "cpu"

    def _load(self, files: VoiceFiles, device: str) -> Any:
        from piper import PiperVoice

        return PiperVoice.load(files.model, config_path=files.config, use_cuda=device == "cuda")

    def _ensure(self, files: VoiceFiles, progress: Progress) -> Any:
        device = self._placement()

        def load() -> Any:
            progress(0.02, f"loading voice {files.model.name} ({device})")
            try:
                return self._load(files, device)
            except Exception as exc:
                raise JobError(
                    f"could not load voice {files.model.name}: {exc}", retryable=True
                ) from exc

        return self._hold(_Key(files.model, files.config, device), load)

    # -- a job ----------------------------------------------------------------------------

    def run(
        self,
        claim: JobOfferClaim,
        model_paths: Mapping[str, Path],
        progress: Progress,
        cancel: threading.Event,
    ) -> JobResult:
        task = claim.task
        if not isinstance(task, TtsTask):
            raise CannotServe(f"tts engine cannot serve {task.kind} tasks")
        text = check_text(task.text)
        ext = output_ext(task.ext)
        files = voice_files(claim.model_source.files, model_paths)
        config = read_voice_config(files.config, files.model.name)
        check_language(config, task.language)
        speaker = speaker_id(config, task.voice)
        scale = length_scale(config, task.speed)
        check_cancel(cancel)
        with self._lock:
            voice = self._ensure(files, progress)
            check_cancel(cancel)
            pcm = self._speak(
                voice, text, speaker=speaker, scale=scale, progress=progress, cancel=cancel
            )
        progress(0.9, f"encoding {ext}")
        data = encode(pcm, config.sample_rate, ext, cancel)
        progress(1.0, "done")
        return BinaryResult(data, ext)

    def _speak(
        self,
        voice: Any,
        text: str,
        *,
        speaker: int | None,
        scale: float,
        progress: Progress,
        cancel: threading.Event,
    ) -> bytes:
        """Sentence by sentence, as `PiperVoice.synthesize` does (peak-normalised each)."""
        import numpy as np
        from piper import SynthesisConfig

        syn = SynthesisConfig(speaker_id=speaker, length_scale=scale)
        if not self._noise:
            syn.noise_scale, syn.noise_w_scale = 0.0, 0.0
        progress(0.05, "phonemising")
        try:
            sentences = [p for p in voice.phonemize(text) if p]
        except Exception as exc:
            raise JobError(f"could not phonemise the text: {exc}", retryable=False) from exc
        if not sentences:
            raise JobError("text has nothing to speak (no words)", retryable=False)
        pieces: list[bytes] = []
        for index, phonemes in enumerate(sentences):
            check_cancel(cancel)
            try:
                ids = voice.phonemes_to_ids(phonemes)
                audio = np.asarray(voice.phoneme_ids_to_audio(ids, syn), dtype=np.float32)
            except Exception as exc:
                raise JobError(f"speech synthesis: {exc}", retryable=False) from exc
            peak = float(np.max(np.abs(audio))) if audio.size else 0.0
            audio = audio / peak if peak >= 1e-8 else np.zeros_like(audio)
            samples = np.clip(audio * 32767.0, -32767.0, 32767.0).astype("<i2")
            pieces.append(samples.tobytes())
            done = index + 1
            progress(
                round(0.1 + 0.8 * done / len(sentences), 4), f"{done}/{len(sentences)} sentences"
            )
        return b"".join(pieces)
