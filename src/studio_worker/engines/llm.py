"""The llama engine: GGUF chat models on llama.cpp, in process (behaviour §6.4, protocol §5.2).

llama_cpp, jinja2 and numpy are imported only when a model is loaded or a prompt rendered:
the parent process builds this class just to read `models_per_kind()`.

A job renders the model's own chat template, tokenizes, refuses a prompt that does not fit
the context (never truncates), then samples token by token so a cancel lands between two
tokens. The last loaded model stays resident for the next job on the same model.
"""

from __future__ import annotations

import codecs
import json
import logging
import struct
import threading
import time
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, BinaryIO

from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import CannotServe, JobError, JobResult, JsonResult
from studio_worker.domain.tasks import JobOfferClaim, LlmTask, ModelFile, ModelSource
from studio_worker.engines.base import Progress, ThrottledProgress, no_progress
from studio_worker.engines.resident import Residency

log = logging.getLogger(__name__)
native_log = logging.getLogger(f"{__name__}.llama_cpp")

DEFAULT_CONTEXT = 8192
WILDCARD = "llama-cpp:*"
# Sampling defaults of llama.cpp itself, used when the task does not set them.
TOP_K = 40
TOP_P = 0.95
MIN_P = 0.05
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"


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


# ---------------------------------------------------------------------------------------
# GGUF header: the trained context length, read before loading (to size the context)
# ---------------------------------------------------------------------------------------

_GGUF_MAGIC = b"GGUF"
# value type -> struct format of a scalar
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_MAX_STRING = 1 << 30


class GgufError(ValueError):
    """The file is not a readable GGUF (truncated, corrupt, or another format)."""


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise GgufError("unexpected end of file in the GGUF header (truncated download?)")
    return data


def _unpack(f: BinaryIO, fmt: str) -> Any:
    return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]


def _string(f: BinaryIO) -> str:
    n = _unpack(f, "<Q")
    if n > _MAX_STRING:
        raise GgufError(f"implausible string length {n} in the GGUF header")
    return _read(f, n).decode("utf-8", errors="replace")


def _value(f: BinaryIO, vtype: int) -> Any:
    if vtype in _SCALARS:
        return _unpack(f, _SCALARS[vtype])
    if vtype == _STRING:
        return _string(f)
    if vtype == _ARRAY:
        itype, count = _unpack(f, "<I"), _unpack(f, "<Q")
        if itype in _SCALARS:  # skip a fixed-size array without reading it
            f.seek(count * struct.calcsize(_SCALARS[itype]), 1)
        else:
            for _ in range(count):
                _value(f, itype)
        return None
    raise GgufError(f"unknown GGUF value type {vtype}")


def gguf_trained_context(path: Path) -> int | None:
    """`<arch>.context_length` from the GGUF header, None when absent.

    Reads only the key/value section up to that key; raises `GgufError` for a file that is
    not a complete GGUF header.
    """
    with path.open("rb") as f:
        if f.read(4) != _GGUF_MAGIC:
            raise GgufError("not a GGUF file (bad magic)")
        version = _unpack(f, "<I")
        if version < 2:
            raise GgufError(f"GGUF version {version} is not supported")
        _unpack(f, "<Q")  # tensor count
        kv_count = _unpack(f, "<Q")
        arch: str | None = None
        for _ in range(kv_count):
            key = _string(f)
            vtype = _unpack(f, "<I")
            value = _value(f, vtype)
            if key == "general.architecture" and isinstance(value, str):
                arch = value
            elif arch is not None and key == f"{arch}.context_length":
                return int(value)
    return None


# ---------------------------------------------------------------------------------------
# Chat template (Jinja, as Hugging Face renders it) and the reasoning split
# ---------------------------------------------------------------------------------------

_templates: dict[str, Any] = {}


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    from jinja2.exceptions import TemplateError

    raise TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _compile(template: str) -> Any:
    compiled = _templates.get(template)
    if compiled is None:
        import jinja2.ext
        from jinja2.sandbox import ImmutableSandboxedEnvironment

        env = ImmutableSandboxedEnvironment(
            trim_blocks=True, lstrip_blocks=True, extensions=[jinja2.ext.loopcontrols]
        )
        env.filters["tojson"] = _tojson
        env.globals["raise_exception"] = _raise_exception
        env.globals["strftime_now"] = _strftime_now
        compiled = env.from_string(template)
        if len(_templates) > 8:
            _templates.clear()
        _templates[template] = compiled
    return compiled


def render_chat(
    template: str,
    messages: Sequence[Mapping[str, Any]],
    *,
    bos_token: str,
    eos_token: str,
    template_kwargs: Mapping[str, Any] | None = None,
) -> str:
    """Render a chat template the way Hugging Face does; errors → `chat template: …`."""
    variables = dict(template_kwargs or {})
    variables.update(
        messages=[dict(m) for m in messages],
        add_generation_prompt=True,
        bos_token=bos_token,
        eos_token=eos_token,
    )
    try:
        return str(_compile(template).render(**variables))
    except Exception as exc:  # syntax, undefined, raise_exception, sandbox, type errors
        message = str(exc) or type(exc).__name__
        raise JobError(f"chat template: {message}", retryable=False) from exc


def chat_messages(task: LlmTask) -> list[dict[str, str]]:
    """The task's messages with `system` prepended as a system message."""
    messages = [{"role": m.role, "content": m.content} for m in task.messages]
    if task.system:
        messages.insert(0, {"role": "system", "content": task.system})
    return messages


def template_kwargs(claim: JobOfferClaim, task: LlmTask) -> dict[str, Any]:
    """`cliDefaults.chatTemplateKwargs` overlaid key by key by the task's."""
    merged = dict(claim.model_source.cli_defaults.chat_template_kwargs or {})
    merged.update(task.chat_template_kwargs or {})
    return merged


def split_reasoning(text: str, *, opened_in_prompt: bool = False) -> tuple[str, str | None]:
    """Split a leading `<think>…</think>` block off: (content, reasoning or None), trimmed.

    `opened_in_prompt`: the rendered prompt already ended with `<think>` (templates that open
    the block for the model), so the output starts inside it. An unterminated block is left
    as content: there is no finished reasoning to separate.
    """
    body = text.lstrip()
    if body.startswith(THINK_OPEN):
        body = body[len(THINK_OPEN) :]
    elif not opened_in_prompt:
        return text.strip(), None
    end = body.find(THINK_CLOSE)
    if end < 0:
        return text.strip(), None
    return body[end + len(THINK_CLOSE) :].strip(), body[:end].strip()


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


def _json_schema_text(schema: Any) -> str:
    if isinstance(schema, str):
        try:
            schema = json.loads(schema)
        except ValueError as exc:
            raise JobError(f"jsonSchema is not valid JSON: {exc}", retryable=False) from exc
    # OpenAI's response_format wrapper: {"name": …, "schema": {…}}
    if isinstance(schema, dict) and isinstance(schema.get("schema"), dict) and "type" not in schema:
        schema = schema["schema"]
    return json.dumps(schema)


@dataclass(frozen=True, slots=True)
class _Key:
    path: Path
    n_ctx: int
    n_gpu_layers: int


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


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
            if cancel.is_set():
                raise JobError("cancelled", retryable=True)
            llm, n_ctx = self._ensure(path, wanted_ctx, throttle)
            started = time.monotonic()
            prompt, stops, opened = self.render_prompt(llm, claim, task)
            completion = self._complete(
                llm,
                task,
                prompt,
                n_ctx=n_ctx,
                stops=stops,
                progress=throttle,
                cancel=cancel,
            )
            elapsed_ms = round((time.monotonic() - started) * 1000)
        content, reasoning = split_reasoning(completion.text, opened_in_prompt=opened)
        message: dict[str, str] = {"role": "assistant", "content": content}
        if reasoning is not None:
            message["reasoning_content"] = reasoning
        throttle(1.0, "done", force=True)
        return JsonResult(
            {
                "object": "chat.completion",
                "model": claim.model,
                "choices": [
                    {"index": 0, "message": message, "finish_reason": completion.finish_reason}
                ],
                "usage": {
                    "prompt_tokens": completion.prompt_tokens,
                    "completion_tokens": completion.completion_tokens,
                    "total_tokens": completion.prompt_tokens + completion.completion_tokens,
                },
                "elapsed_ms": elapsed_ms,
            }
        )

    @staticmethod
    def render_prompt(llm: Any, claim: JobOfferClaim, task: LlmTask) -> tuple[str, list[str], bool]:
        """(prompt text, stop strings, whether the prompt opens a think block)."""
        messages = chat_messages(task)
        stops = [s for s in task.stop or [] if s]
        template = llm.metadata.get("tokenizer.chat_template")
        if not template:
            # No template in the GGUF: fall back to llama-cpp-python's own default chat
            # format (the one `Llama` picks for such a model, "llama-2").
            from llama_cpp import llama_chat_format

            formatted = llama_chat_format.format_llama2(messages=messages)
            extra = formatted.stop or []
            stops += [extra] if isinstance(extra, str) else list(extra)
            return formatted.prompt, stops, False
        prompt = render_chat(
            template,
            messages,
            bos_token=_token_text(llm, llm.token_bos()),
            eos_token=_token_text(llm, llm.token_eos()),
            template_kwargs=template_kwargs(claim, task),
        )
        return prompt, stops, prompt.rstrip().endswith(THINK_OPEN)

    @staticmethod
    def tokenize_prompt(llm: Any, prompt: str) -> list[int]:
        """Tokens of the rendered prompt; BOS only when the model wants it and it is absent."""
        import llama_cpp

        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        bos = llm.token_bos()
        bos_text = _token_text(llm, bos)
        add_bos = bool(llama_cpp.llama_vocab_get_add_bos(vocab)) and not (
            bos_text and prompt.startswith(bos_text)
        )
        return list(llm.tokenize(prompt.encode("utf-8"), add_bos=add_bos, special=True))

    def _complete(
        self,
        llm: Any,
        task: LlmTask,
        prompt: str,
        *,
        n_ctx: int,
        stops: list[str],
        progress: ThrottledProgress,
        cancel: threading.Event,
    ) -> Completion:
        import llama_cpp

        tokens = self.tokenize_prompt(llm, prompt)
        # `n_ctx` is the context asked for: llama.cpp pads its own (to a multiple of 256),
        # but llama-cpp-python sizes its token buffers by the number asked for.
        if not tokens:
            raise JobError("the chat template rendered an empty prompt", retryable=False)
        if len(tokens) >= n_ctx:
            raise JobError(
                f"prompt is {len(tokens)} tokens but the context holds {n_ctx}; "
                "raise contextSize or shorten the prompt",
                retryable=False,
            )
        budget = min(max(task.max_tokens, 1), n_ctx - len(tokens))
        grammar = _grammar(llm, task.json_schema) if task.json_schema is not None else None
        vocab = llama_cpp.llama_model_get_vocab(llm.model)
        greedy = task.temperature <= 0
        decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        longest_stop = max((len(s) for s in stops), default=0)
        text = ""
        generated = 0
        finish = "length"
        progress(0.0, f"generating (prompt {len(tokens)} tokens, budget {budget})", force=True)
        for token in llm.generate(
            tokens,
            temp=0.0 if greedy else task.temperature,
            top_k=TOP_K,
            top_p=task.top_p if task.top_p is not None else TOP_P,
            min_p=MIN_P,
            repeat_penalty=1.0,
            grammar=grammar,
        ):
            if cancel.is_set():
                raise JobError("cancelled", retryable=True)
            if llama_cpp.llama_vocab_is_eog(vocab, token):
                finish = "stop"
                break
            generated += 1
            before = len(text)
            text += decoder.decode(_piece(vocab, token))
            if stops:
                cut = _first_stop(text, stops, max(0, before - longest_stop + 1))
                if cut is not None:
                    text = text[:cut]
                    finish = "stop"
                    break
            if generated >= budget:
                break
            # the first token always shows (time to first token), then throttled
            progress(generated / budget, f"{generated}/{budget} tokens", force=generated == 1)
        return Completion(text, len(tokens), generated, finish)


def _is_template_error(exc: BaseException) -> bool:
    from jinja2.exceptions import TemplateError

    return isinstance(exc, TemplateError)


def _first_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    hits = [i for s in stops if (i := text.find(s, start)) >= 0]
    return min(hits) if hits else None


def _token_text(llm: Any, token: int) -> str:
    if token < 0:
        return ""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    raw = llama_cpp.llama_vocab_get_text(vocab, token)
    return raw.decode("utf-8", errors="replace") if raw else ""


def _piece(vocab: Any, token: int) -> bytes:
    """The bytes a generated token stands for (special tokens render as nothing)."""
    import ctypes

    import llama_cpp

    size = 64
    while True:
        buf = ctypes.create_string_buffer(size)
        n = llama_cpp.llama_token_to_piece(vocab, token, buf, size, 0, False)
        if n >= 0:
            return buf.raw[:n]
        size = -n  # too small: llama.cpp answers the size it needs


def _grammar(llm: Any, schema: Any) -> Any:
    import llama_cpp
    from llama_cpp.llama_grammar import LlamaGrammar

    text = _json_schema_text(schema)
    try:
        grammar = LlamaGrammar.from_json_schema(text, verbose=False)
    except Exception as exc:
        raise JobError(
            f"jsonSchema: cannot turn this schema into a grammar: {exc}", retryable=False
        ) from exc
    # llama.cpp answers NULL for a grammar it cannot parse; probe before sampling with it.
    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    probe = llama_cpp.llama_sampler_init_grammar(
        vocab, grammar._grammar.encode("utf-8"), grammar._root.encode("utf-8")
    )
    if not probe:
        raise JobError("jsonSchema: llama.cpp rejected the grammar built from it", retryable=False)
    llama_cpp.llama_sampler_free(probe)
    return grammar
