"""The whisper engine: speech to text with faster-whisper (CTranslate2), protocol §5.3.

faster_whisper and ctranslate2 are imported only when a model is loaded: the parent process
builds this class just to read `models_per_kind()`.

A job fetches `inputUrl` (https, or loopback http) into memory, decodes it with PyAV (WAV,
MP3, OGG, FLAC, … whatever FFmpeg reads), and transcribes segment by segment so a cancel
lands between two segments. The last loaded model stays resident for the next job.
"""

from __future__ import annotations

import io
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import CannotServe, JobError, JobResult, JsonResult
from studio_worker.domain.tasks import JobOfferClaim, ModelFile, ModelSource, SttTask
from studio_worker.engines.base import Progress, check_cancel, no_progress
from studio_worker.engines.inputs import fetch_input
from studio_worker.engines.resident import Residency

WILDCARD = "faster-whisper:*"
MAX_AUDIO_BYTES = 200 * 1024 * 1024
FETCH_TIMEOUT_S = 120.0
DEFAULT_LANGUAGE = "en"
# What a CTranslate2 Whisper dir must hold for an offline load: without `tokenizer.json`
# faster-whisper would fetch a tokenizer from the Hugging Face hub.
REQUIRED_FILES = ("model.bin", "config.json", "tokenizer.json")


def whisper_dir(files: Sequence[ModelFile], model_paths: Mapping[str, Path]) -> Path:
    """The directory of the `model`-role file (else of the first file) of the model source."""
    chosen = next((f for f in files if f.role == "model"), files[0] if files else None)
    if chosen is None:
        raise JobError("whisper modelSource has no files", retryable=False)
    path = model_paths.get(chosen.filename)
    if path is None:
        raise JobError(f"model file {chosen.filename} was not provided", retryable=True)
    return path.parent


@dataclass(frozen=True, slots=True)
class _Key:
    dir: Path
    device: str
    compute_type: str


def _seconds(value: Any) -> float:
    return round(float(value), 3)


class WhisperEngine(Residency[_Key, Any]):
    """faster-whisper; serves `audio_stt` tasks of `faster-whisper`/`whisper` model sources."""

    name = "whisper"

    def __init__(
        self,
        *,
        device: str | None = None,
        compute_type: str | None = None,
        cpu_threads: int = 0,
        max_audio_bytes: int = MAX_AUDIO_BYTES,
    ) -> None:
        self._device = device
        self._compute_type = compute_type
        self._cpu_threads = cpu_threads
        self.max_audio_bytes = max_audio_bytes
        super().__init__()

    def models_per_kind(self) -> Mapping[TaskKind, list[str]]:
        return {TaskKind.AUDIO_STT: [WILDCARD]}

    # -- residency ------------------------------------------------------------------------

    @property
    def loaded(self) -> Path | None:
        key = self._key
        return key.dir if key else None

    def _files(self, key: _Key) -> list[Path]:
        return [key.dir]

    def preload(self, source: ModelSource, model_paths: Mapping[str, Path]) -> None:
        dir = whisper_dir(source.files, model_paths)
        with self._lock:
            self._ensure(dir, no_progress)

    def _placement(self) -> tuple[str, str]:
        device = self._device
        if device is None:
            import ctranslate2

            device = "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
        compute_type = self._compute_type or ("float16" if device == "cuda" else "int8")
        return device, compute_type

    def _load(self, dir: Path, device: str, compute_type: str) -> Any:
        from faster_whisper import WhisperModel

        return WhisperModel(
            str(dir),
            device=device,
            compute_type=compute_type,
            cpu_threads=self._cpu_threads,
            local_files_only=True,
        )

    def _ensure(self, dir: Path, progress: Progress) -> Any:
        missing = [name for name in REQUIRED_FILES if not (dir / name).is_file()]
        if missing:
            raise JobError(
                f"could not load model {dir.name}: the whisper model dir lacks "
                f"{', '.join(missing)}",
                retryable=False,
            )
        device, compute_type = self._placement()

        def load() -> Any:
            progress(0.05, f"loading {dir.name} ({device}, {compute_type})")
            try:
                return self._load(dir, device, compute_type)
            except Exception as exc:
                raise JobError(f"could not load model {dir.name}: {exc}", retryable=True) from exc

        return self._hold(_Key(dir, device, compute_type), load)

    # -- a job ----------------------------------------------------------------------------

    def run(
        self,
        claim: JobOfferClaim,
        model_paths: Mapping[str, Path],
        progress: Progress,
        cancel: threading.Event,
    ) -> JobResult:
        task = claim.task
        if not isinstance(task, SttTask):
            raise CannotServe(f"whisper engine cannot serve {task.kind} tasks")
        dir = whisper_dir(claim.model_source.files, model_paths)
        check_cancel(cancel)
        progress(0.0, "fetching audio")
        data = fetch_input(
            task.input_url, max_bytes=self.max_audio_bytes, timeout_s=FETCH_TIMEOUT_S, what="audio"
        )
        check_cancel(cancel)
        with self._lock:
            model = self._ensure(dir, progress)
            check_cancel(cancel)
            result = self._transcribe(model, task, data, progress, cancel)
        progress(1.0, "done")
        return JsonResult(result)

    def _transcribe(
        self,
        model: Any,
        task: SttTask,
        data: bytes,
        progress: Progress,
        cancel: threading.Event,
    ) -> dict[str, Any]:
        from faster_whisper.audio import decode_audio

        progress(0.1, "decoding audio")
        try:
            audio = decode_audio(
                io.BytesIO(data), sampling_rate=model.feature_extractor.sampling_rate
            )
        except Exception as exc:  # PyAV: not audio, truncated, unknown container/codec
            raise JobError(f"could not decode audio: {exc}", retryable=False) from exc
        if audio.size == 0:
            raise JobError("could not decode audio: it holds no samples", retryable=False)
        words = task.timestamps == "word"
        try:
            segments, info = model.transcribe(
                audio,
                language=task.language or None,
                task="translate" if task.translate else "transcribe",
                initial_prompt=task.prompt or None,
                vad_filter=bool(task.vad),
                word_timestamps=words,
            )
        except ValueError as exc:  # e.g. a language code the model does not know
            raise JobError(f"transcription: {exc}", retryable=False) from exc
        duration = float(info.duration) or 1.0
        texts: list[str] = []
        listed: list[dict[str, Any]] = []
        for index, segment in enumerate(segments):
            check_cancel(cancel)
            texts.append(segment.text)
            entry: dict[str, Any] = {
                "id": index,
                "start": _seconds(segment.start),
                "end": _seconds(segment.end),
                "text": segment.text,
            }
            if words:
                entry["words"] = [
                    {
                        "start": _seconds(w.start),
                        "end": _seconds(w.end),
                        "word": w.word,
                        "probability": round(float(w.probability), 4),
                    }
                    for w in segment.words or []
                ]
            listed.append(entry)
            progress(0.1 + 0.9 * min(1.0, float(segment.end) / duration), f"{index + 1} segments")
        result: dict[str, Any] = {
            "text": "".join(texts).strip(),
            "language": info.language or task.language or DEFAULT_LANGUAGE,
            "duration": _seconds(info.duration),
        }
        if task.timestamps is not None:
            result["segments"] = listed
        return result
