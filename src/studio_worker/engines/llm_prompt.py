"""The llama engine's chat side: the prompt a job renders and the result it answers.

The model's own chat template is rendered as Hugging Face renders it (Jinja, sandboxed);
a GGUF without one falls back to llama-cpp-python's default format. A leading
`<think>…</think>` block of the output is split off as reasoning, and the result is an
OpenAI-shaped `chat.completion` (protocol §5.2).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from studio_worker.domain.results import JobError
from studio_worker.domain.tasks import JobOfferClaim, LlmTask

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

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


def _token_text(llm: Any, token: int) -> str:
    if token < 0:
        return ""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llm.model)
    raw = llama_cpp.llama_vocab_get_text(vocab, token)
    return raw.decode("utf-8", errors="replace") if raw else ""


@dataclass(frozen=True, slots=True)
class Completion:
    text: str
    prompt_tokens: int
    completion_tokens: int
    finish_reason: str


def chat_completion(
    claim: JobOfferClaim, completion: Completion, *, opened_in_prompt: bool, elapsed_ms: int
) -> dict[str, Any]:
    """The OpenAI-shaped `chat.completion` of a job, its reasoning split off."""
    content, reasoning = split_reasoning(completion.text, opened_in_prompt=opened_in_prompt)
    message: dict[str, str] = {"role": "assistant", "content": content}
    if reasoning is not None:
        message["reasoning_content"] = reasoning
    return {
        "object": "chat.completion",
        "model": claim.model,
        "choices": [{"index": 0, "message": message, "finish_reason": completion.finish_reason}],
        "usage": {
            "prompt_tokens": completion.prompt_tokens,
            "completion_tokens": completion.completion_tokens,
            "total_tokens": completion.prompt_tokens + completion.completion_tokens,
        },
        "elapsed_ms": elapsed_ms,
    }
