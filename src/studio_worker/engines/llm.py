"""The llama engine: GGUF chat models on llama.cpp, in process (behaviour §6.4, protocol §5.2).

llama_cpp, jinja2 and numpy are imported only when a model is loaded or a prompt rendered:
the parent process builds this class just to read `models_per_kind()`.

A job renders the model's own chat template, tokenizes, refuses a prompt that does not fit
the context (never truncates), then samples token by token so a cancel lands between two
tokens. The last loaded model stays resident for the next job on the same model.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import CannotServe, JobError, JobResult, JsonResult
from studio_worker.domain.tasks import JobOfferClaim, LlmTask, ModelFile, ModelSource
from studio_worker.engines.base import Progress, ThrottledProgress, check_cancel, no_progress
from studio_worker.engines.gguf import GgufError, gguf_trained_context
from studio_worker.engines.llm_generate import complete
from studio_worker.engines.llm_prompt import chat_completion, render_prompt, tokenize_prompt
from studio_worker.engines.resident import Residency

log = logging.getLogger(__name__)
native_log = logging.getLogger(f"{__name__}.llama_cpp")

DEFAULT_CONTEXT = 8192
WILDCARD = "llama-cpp:*"


# ---------------------------------------------------------------------------------------
# llama.cpp's own log lines go to the `logging` tree, never to stdout
# ---------------------------------------------------------------------------------------

# ggml_log_level (ggml.h): 0 none, 1 debug, 2 info, 3 warn, 4 error, 5 continuation of the
# previous line. llama.cpp's info lines are per-layer chatter: they go out at debug level.
_LOG_WARN, _LOG_ERROR, _LOG_CONT = 3, 4, 5
_NATIVE_LEVELS = {_LOG_WARN: logging.WARNING, _LOG_ERROR: logging.ERROR}
_native_errors: deque[str] = deque(maxlen=6)
_native_state: dict[str, Any] = {"callback": None, "level": 0}


def _on_native_log(level: int, text: bytes, user_data: Any) -> None:
    if level == _LOG_CONT:
        level = _native_state["level"]
    _native_state["level"] = level
    message = text.decode("utf-8", errors="replace").rstrip()
    if not message:
        return
    if level == _LOG_ERROR:
        _native_errors.append(message)
    native_log.log(_NATIVE_LEVELS.get(level, logging.DEBUG), "%s", message)


def route_native_logs() -> None:
    """Send llama.cpp/ggml log lines to `native_log` (info chatter at debug level).

    The last error lines are kept so that a failed load can say why.
    """
    if _native_state["callback"] is not None:
        return
    import ctypes

    import llama_cpp

    callback = llama_cpp.llama_log_callback(_on_native_log)
    llama_cpp.llama_log_set(callback, ctypes.c_void_p(0))
    _native_state["callback"] = callback  # ctypes callbacks must outlive their use


def llm_file(files: Sequence[ModelFile], model_paths: Mapping[str, Path]) -> Path:
    """The `model`-role `.gguf`, else the first `.gguf` of the model source."""
    ggufs = [f for f in files if f.filename.lower().endswith(".gguf")]
    chosen = next((f for f in ggufs if f.role == "model"), ggufs[0] if ggufs else None)
    if chosen is None:
        raise JobError("llama modelSource has no .gguf model file", retryable=False)
    path = model_paths.get(chosen.filename)
    if path is None:
        raise JobError(f"model file {chosen.filename} was not provided", retryable=True)
    return path


@dataclass(frozen=True, slots=True)
class _Key:
    path: Path
    n_ctx: int
    n_gpu_layers: int


class LlamaEngine(Residency[_Key, Any]):
    """llama.cpp through llama-cpp-python; serves `llm` tasks of `llama-cpp` model sources."""

    name = "llama"
    free_at_exit = True

    def __init__(self, models_root: Path, *, n_gpu_layers: int | None = None) -> None:
        self._models_root = models_root
        self._n_gpu_layers = n_gpu_layers
        super().__init__()

    # -- roster ---------------------------------------------------------------------------

    def models_per_kind(self) -> Mapping[TaskKind, list[str]]:
        stems = sorted(p.stem for p in (self._models_root / "llm").glob("*.gguf"))
        return {TaskKind.LLM: [*stems, WILDCARD]}

    # -- residency ------------------------------------------------------------------------

    @property
    def loaded(self) -> Path | None:
        """The file of the resident model, if any."""
        key = self._key
        return key.path if key else None

    @property
    def context_size(self) -> int | None:
        """The context (tokens) of the resident model, if any."""
        key = self._key
        return key.n_ctx if key else None

    def _files(self, key: _Key) -> list[Path]:
        return [key.path]

    def _close(self, model: Any) -> None:
        model.close()

    def preload(self, source: ModelSource, model_paths: Mapping[str, Path]) -> None:
        path = llm_file(source.files, model_paths)
        wanted_ctx = source.cli_defaults.context_size or DEFAULT_CONTEXT
        with self._lock:
            self._ensure(path, wanted_ctx, ThrottledProgress(no_progress))

    def _gpu_layers(self) -> int:
        if self._n_gpu_layers is not None:
            return self._n_gpu_layers
        import llama_cpp

        return -1 if llama_cpp.llama_supports_gpu_offload() else 0

    def _ensure(self, path: Path, wanted_ctx: int, progress: ThrottledProgress) -> tuple[Any, int]:
        """The loaded model for `path` and its context size, loading it when not resident."""
        try:
            trained = gguf_trained_context(path)
        except (OSError, GgufError) as exc:
            raise JobError(f"could not load model {path.name}: {exc}", retryable=True) from exc
        n_ctx = min(wanted_ctx, trained) if trained else wanted_ctx
        key = _Key(path, n_ctx, self._gpu_layers())

        def load() -> Any:
            progress(0.0, f"loading {path.name}", force=True)
            from llama_cpp import Llama

            route_native_logs()
            _native_errors.clear()
            started = time.monotonic()
            try:
                llm = Llama(
                    model_path=str(path),
                    n_ctx=n_ctx,
                    n_gpu_layers=key.n_gpu_layers,
                    verbose=False,
                )
            except Exception as exc:
                if _is_template_error(exc):
                    # llama-cpp-python compiles the GGUF's chat template while loading
                    raise JobError(f"chat template: {exc}", retryable=False) from exc
                why = "; ".join(_native_errors)
                raise JobError(
                    f"could not load model {path.name}: {exc}" + (f" ({why})" if why else ""),
                    retryable=True,
                ) from exc
            log.info(
                "loaded %s: context %d, gpu layers %d, %.2f s",
                path.name,
                n_ctx,
                key.n_gpu_layers,
                time.monotonic() - started,
            )
            progress(0.0, f"loaded {path.name} (context {n_ctx})", force=True)
            return llm

        return self._hold(key, load), n_ctx

    # -- a job ----------------------------------------------------------------------------

    def run(
        self,
        claim: JobOfferClaim,
        model_paths: Mapping[str, Path],
        progress: Progress,
        cancel: threading.Event,
    ) -> JobResult:
        task = claim.task
        if not isinstance(task, LlmTask):
            raise CannotServe(f"llama engine cannot serve {task.kind} tasks")
        path = llm_file(claim.model_source.files, model_paths)
        wanted_ctx = claim.model_source.cli_defaults.context_size or DEFAULT_CONTEXT
        throttle = ThrottledProgress(progress)
        with self._lock:
            check_cancel(cancel)
            llm, n_ctx = self._ensure(path, wanted_ctx, throttle)
            started = time.monotonic()
            prompt, stops, opened = render_prompt(llm, claim, task)
            completion = complete(
                llm,
                task,
                prompt,
                n_ctx=n_ctx,
                stops=stops,
                progress=throttle,
                cancel=cancel,
            )
            elapsed_ms = round((time.monotonic() - started) * 1000)
        result = chat_completion(claim, completion, opened_in_prompt=opened, elapsed_ms=elapsed_ms)
        throttle(1.0, "done", force=True)
        return JsonResult(result)

    # a loaded `Llama`'s prompt, for callers that drive one directly (bench/engines.py)
    render_prompt = staticmethod(render_prompt)
    tokenize_prompt = staticmethod(tokenize_prompt)


def _is_template_error(exc: BaseException) -> bool:
    from jinja2.exceptions import TemplateError

    return isinstance(exc, TemplateError)
