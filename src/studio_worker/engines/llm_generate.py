"""The llama engine's generation: token by token, so a cancel lands between two tokens.

A prompt that does not fit the context is refused (never truncated); a `jsonSchema`
constrains the output with a llama.cpp grammar built from it.
"""

from __future__ import annotations

import codecs
import json
import threading
from collections.abc import Sequence
from typing import Any

from studio_worker.domain.results import JobError
from studio_worker.domain.tasks import LlmTask
from studio_worker.engines.base import ThrottledProgress, check_cancel
from studio_worker.engines.llm_prompt import Completion, tokenize_prompt

# Sampling defaults of llama.cpp itself, used when the task does not set them.
TOP_K = 40
TOP_P = 0.95
MIN_P = 0.05


def complete(
    llm: Any,
    task: LlmTask,
    prompt: str,
    *,
    n_ctx: int,
    stops: list[str],
    progress: ThrottledProgress,
    cancel: threading.Event,
) -> Completion:
    """The model's answer to `prompt` within `n_ctx`, cut at the first of `stops`."""
    import llama_cpp

    tokens = tokenize_prompt(llm, prompt)
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
        check_cancel(cancel)
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


def _first_stop(text: str, stops: Sequence[str], start: int) -> int | None:
    hits = [i for s in stops if (i := text.find(s, start)) >= 0]
    return min(hits) if hits else None


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
