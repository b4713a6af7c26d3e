"""The llama engine on tiny real GGUF models (llama.cpp loads and runs them for real)."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from fixtures.tiny_models import THINK_ANSWER, TINY_ANSWER
from studio_worker.domain.kinds import TaskKind
from studio_worker.domain.results import CannotServe, JobError, JsonResult
from studio_worker.domain.tasks import JobOfferClaim
from studio_worker.engines.gguf import GgufError, gguf_trained_context
from studio_worker.engines.llm import LlamaEngine
from studio_worker.engines.llm_prompt import render_chat, split_reasoning

if TYPE_CHECKING:
    from conftest import Ggufs

HI = [{"role": "user", "content": "hi"}]
CHATML_HI = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def claim(
    task: dict[str, Any], *, filename: str = "tiny.gguf", model: str = "tiny-llm", **cli: Any
) -> JobOfferClaim:
    return JobOfferClaim.model_validate(
        {
            "jobId": "job-1",
            "gameId": "g",
            "assetName": "a",
            "model": model,
            "vramGbEstimate": 0.1,
            "task": {"kind": "llm", "messages": HI, "temperature": 0, **task},
            "modelSource": {
                "engine": "llama-cpp",
                "files": [
                    {"role": "text-encoder", "url": "https://h/x.bin", "filename": "notes.bin"},
                    {"role": "model", "url": "https://h/m", "filename": filename},
                ],
                "cliDefaults": {"cfgScale": 0, "steps": 0, "width": 0, "height": 0, **cli},
            },
        }
    )


class Recorder:
    def __init__(self, cancel_on: str | None = None, cancel: threading.Event | None = None):
        self.events: list[tuple[float, str]] = []
        self._cancel_on, self._cancel = cancel_on, cancel

    def __call__(self, fraction: float, note: str) -> None:
        self.events.append((fraction, note))
        if self._cancel_on and note.startswith(self._cancel_on) and self._cancel:
            self._cancel.set()


def run(
    engine: LlamaEngine,
    gguf: Path,
    task: dict[str, Any] | None = None,
    progress: Recorder | None = None,
    cancel: threading.Event | None = None,
    **cli: Any,
) -> dict[str, Any]:
    result = engine.run(
        claim(task or {}, **cli),
        {"tiny.gguf": gguf, "notes.bin": gguf.parent / "notes.bin"},
        progress or Recorder(),
        cancel or threading.Event(),
    )
    assert isinstance(result, JsonResult)
    value: dict[str, Any] = result.value
    return value


_vocabs: dict[Path, Any] = {}


@pytest.fixture(scope="module", autouse=True)
def _close_vocabs() -> Iterator[None]:
    yield
    for vocab in _vocabs.values():
        vocab.close()
    _vocabs.clear()


def token_count(gguf: Path, text: str, *, bos: bool = True) -> int:
    """Tokens of `text` by a separate vocab-only load: an independent count."""
    if gguf not in _vocabs:
        from llama_cpp import Llama

        _vocabs[gguf] = Llama(str(gguf), vocab_only=True, verbose=False)
    return len(_vocabs[gguf].tokenize(text.encode(), add_bos=bos, special=True))


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LlamaEngine]:
    engine = LlamaEngine(tmp_path_factory.mktemp("models"), n_gpu_layers=0)
    yield engine
    engine.unload()


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[LlamaEngine]:
    engine = LlamaEngine(tmp_path, n_gpu_layers=0)
    yield engine
    engine.unload()


def test_full_run_is_the_chat_completion_shape(engine: LlamaEngine, ggufs: Ggufs) -> None:
    progress = Recorder()
    value = run(engine, ggufs.plain, progress=progress)
    elapsed = value.pop("elapsed_ms")
    assert isinstance(elapsed, int) and 0 <= elapsed < 10_000
    prompt_tokens = token_count(ggufs.plain, CHATML_HI)
    completion_tokens = token_count(ggufs.plain, TINY_ANSWER, bos=False)
    assert completion_tokens == 6
    assert value == {
        "object": "chat.completion",
        "model": "tiny-llm",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": TINY_ANSWER},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": completion_tokens,
            "total_tokens": prompt_tokens + completion_tokens,
        },
    }
    fractions = [f for f, _ in progress.events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0
    assert any(note.startswith("generating (prompt") for _, note in progress.events)


def test_system_field_is_prepended_as_a_system_message(engine: LlamaEngine, ggufs: Ggufs) -> None:
    value = run(engine, ggufs.plain, {"system": "be brief"})
    expected = "<|im_start|>system\nbe brief<|im_end|>\n" + CHATML_HI
    assert value["usage"]["prompt_tokens"] == token_count(ggufs.plain, expected)
    assert value["choices"][0]["message"]["content"] == TINY_ANSWER


def test_bos_is_not_doubled_when_the_template_writes_it(engine: LlamaEngine, ggufs: Ggufs) -> None:
    from llama_cpp import Llama

    value = run(engine, ggufs.bos_template)
    assert value["usage"]["prompt_tokens"] == token_count(ggufs.plain, CHATML_HI)
    llm = Llama(str(ggufs.bos_template), vocab_only=True, verbose=False)
    try:
        tokens = LlamaEngine.tokenize_prompt(llm, "<s>" + CHATML_HI)
        assert tokens[:2] != [1, 1] and tokens[0] == 1
        assert LlamaEngine.tokenize_prompt(llm, CHATML_HI)[0] == 1  # added when absent
    finally:
        llm.close()
    assert value["choices"][0]["message"]["content"] == TINY_ANSWER


def test_budget_used_up_is_length(engine: LlamaEngine, ggufs: Ggufs) -> None:
    value = run(engine, ggufs.plain, {"maxTokens": 3})
    assert value["choices"][0]["message"]["content"] == "hello world from"
    assert value["choices"][0]["finish_reason"] == "length"
    assert value["usage"]["completion_tokens"] == 3


def test_budget_exactly_the_answer_is_still_length(engine: LlamaEngine, ggufs: Ggufs) -> None:
    # six tokens fill the budget before the end-of-generation token is seen
    value = run(engine, ggufs.plain, {"maxTokens": 6})
    assert value["choices"][0]["message"]["content"] == TINY_ANSWER
    assert value["choices"][0]["finish_reason"] == "length"


@pytest.mark.parametrize(
    ("stop", "content"),
    [
        (["tiny"], "hello world from"),
        ([" llama", "never"], "hello world from tiny"),
        (["d fr"], "hello worl"),  # a stop string spanning two tokens
        (["absent"], TINY_ANSWER),
    ],
)
def test_stop_strings_are_cut_and_never_emitted(
    engine: LlamaEngine, ggufs: Ggufs, stop: list[str], content: str
) -> None:
    value = run(engine, ggufs.plain, {"stop": stop})
    assert value["choices"][0]["message"]["content"] == content
    assert value["choices"][0]["finish_reason"] == "stop"


def test_sampling_with_temperature_and_top_p_runs(engine: LlamaEngine, ggufs: Ggufs) -> None:
    value = run(engine, ggufs.plain, {"temperature": 0.7, "topP": 0.9, "maxTokens": 8})
    # the chain is wired so strongly that sampling follows it too
    assert value["choices"][0]["message"]["content"] == TINY_ANSWER


def test_leading_think_block_becomes_reasoning_content(engine: LlamaEngine, ggufs: Ggufs) -> None:
    value = run(engine, ggufs.think)
    assert value["choices"][0]["message"] == {
        "role": "assistant",
        "content": TINY_ANSWER,
        "reasoning_content": "ok",
    }
    # <think> ▁ok </think> ▁hello ▁world ▁from ▁tiny ▁llama . — then the end token
    assert value["usage"]["completion_tokens"] == 9
    assert THINK_ANSWER.endswith(TINY_ANSWER)


@pytest.mark.parametrize(
    ("text", "opened", "expected"),
    [
        ("<think> plan </think>  answer ", False, ("answer", "plan")),
        ("\n<think>\n\n</think>\n\nanswer", False, ("answer", "")),
        ("plan</think>answer", True, ("answer", "plan")),
        ("plan</think>answer", False, ("plan</think>answer", None)),
        ("<think>still thinking", False, ("<think>still thinking", None)),
        ("answer <think>x</think>", False, ("answer <think>x</think>", None)),
        ("  plain  ", False, ("plain", None)),
    ],
)
def test_split_reasoning(text: str, opened: bool, expected: tuple[str, str | None]) -> None:
    assert split_reasoning(text, opened_in_prompt=opened) == expected


def test_template_kwargs_defaults_overlaid_by_the_task(engine: LlamaEngine, ggufs: Ggufs) -> None:
    defaults = {"greeting": "hello hello hello", "tone": "ok"}
    value = run(
        engine,
        ggufs.kwargs,
        {"chatTemplateKwargs": {"tone": "the test"}},
        chatTemplateKwargs=defaults,
    )
    expected = "<|im_start|>system\nhello hello hello the test<|im_end|>\n" + CHATML_HI
    assert value["usage"]["prompt_tokens"] == token_count(ggufs.kwargs, expected)
    without = run(engine, ggufs.kwargs)
    bare = "<|im_start|>system\nnone <|im_end|>\n" + CHATML_HI
    assert without["usage"]["prompt_tokens"] == token_count(ggufs.kwargs, bare)
    assert value["usage"]["prompt_tokens"] > without["usage"]["prompt_tokens"]
    assert value["choices"][0]["message"]["content"] == TINY_ANSWER


def test_render_chat_mimics_hugging_face() -> None:
    pytest.importorskip("jinja2", reason="jinja2 comes with llama-cpp-python")
    template = (
        "{% for m in messages %}\n"
        "  {% if m.role == 'system' %}[{{ m.content | tojson }}]{% else %}{{ m.content }}"
        "{% endif %}\n{% if loop.index == 2 %}{% break %}{% endif %}\n{% endfor %}"
        "{{ bos_token }}{{ eos_token }}{{ flag }}{{ add_generation_prompt }}"
        "{{ strftime_now('%Y') | length }}"
    )
    rendered = render_chat(
        template,
        [
            {"role": "system", "content": "é"},
            {"role": "user", "content": "q"},
            {"role": "user", "content": "never"},
        ],
        bos_token="<s>",
        eos_token="</s>",
        template_kwargs={"flag": 7, "messages": "cannot override"},
    )
    # trim_blocks + lstrip_blocks, tojson without ASCII escapes, loop controls, globals
    assert rendered == '["é"]q<s></s>7True4'


def test_template_raise_exception_is_a_chat_template_error(
    engine: LlamaEngine, ggufs: Ggufs
) -> None:
    with pytest.raises(JobError) as err:
        run(engine, ggufs.raising)
    assert err.value.message == "chat template: only user messages, please"
    assert err.value.retryable is False


def test_template_syntax_error_is_a_chat_template_error(engine: LlamaEngine, ggufs: Ggufs) -> None:
    with pytest.raises(JobError) as err:
        run(engine, ggufs.broken_syntax)
    assert err.value.message.startswith("chat template: ")
    assert err.value.retryable is False


def test_gguf_without_template_uses_the_default_chat_format(
    engine: LlamaEngine, ggufs: Ggufs
) -> None:
    from llama_cpp import llama_chat_format

    value = run(engine, ggufs.no_template, {"maxTokens": 4})
    prompt = llama_chat_format.format_llama2(messages=HI).prompt
    assert value["usage"]["prompt_tokens"] == token_count(ggufs.no_template, prompt)
    assert value["choices"][0]["finish_reason"] in {"stop", "length"}
    assert 0 < value["usage"]["completion_tokens"] <= 4


def test_prompt_longer_than_the_context_is_refused_not_truncated(
    engine: LlamaEngine, ggufs: Ggufs
) -> None:
    words = " ".join(["hello world"] * 40)
    task = {"messages": [{"role": "user", "content": words}]}
    n = token_count(ggufs.plain, CHATML_HI.replace("hi", words))
    assert n > 64
    with pytest.raises(JobError) as err:
        run(engine, ggufs.plain, task, contextSize=64)
    assert err.value.message == (
        f"prompt is {n} tokens but the context holds 64; raise contextSize or shorten the prompt"
    )
    assert err.value.retryable is False


def test_context_is_capped_at_the_trained_context(engine: LlamaEngine, ggufs: Ggufs) -> None:
    assert gguf_trained_context(ggufs.short_context) == 128
    run(engine, ggufs.short_context, contextSize=8192)
    assert engine.context_size == 128
    words = " ".join(["hello world"] * 60)
    with pytest.raises(JobError) as err:
        run(engine, ggufs.short_context, {"messages": [{"role": "user", "content": words}]})
    assert "but the context holds 128;" in err.value.message


def test_budget_is_clamped_to_the_room_left(engine: LlamaEngine, ggufs: Ggufs) -> None:
    # a 40-token context: the 14-token prompt leaves room for the whole answer
    value = run(engine, ggufs.plain, {"maxTokens": 4096}, contextSize=40)
    assert engine.context_size == 40
    assert value["choices"][0]["message"]["content"] == TINY_ANSWER
    prompt = value["usage"]["prompt_tokens"]
    tight = run(engine, ggufs.plain, {"maxTokens": 4096}, contextSize=prompt + 2)
    assert tight["usage"]["completion_tokens"] == 2
    assert tight["choices"][0]["finish_reason"] == "length"


def test_resident_model_is_reused_and_a_different_one_reloads(
    fresh: LlamaEngine, ggufs: Ggufs
) -> None:
    engine = fresh
    run(engine, ggufs.plain)
    run(engine, ggufs.plain, {"maxTokens": 2})
    assert engine.loads == 1 and engine.loaded == ggufs.plain
    other = run(engine, ggufs.other)  # f16 weights, another seed: the same chain
    assert other["choices"][0]["message"]["content"] == TINY_ANSWER
    assert engine.loads == 2 and engine.loaded == ggufs.other
    run(engine, ggufs.other, contextSize=256)  # another context size is another load
    assert engine.loads == 3 and engine.context_size == 256
    engine.unload()
    assert engine.loaded is None and engine.context_size is None
    run(engine, ggufs.other, contextSize=256)
    assert engine.loads == 4


def test_a_preload_loads_what_the_next_job_uses_and_is_reported_resident(
    fresh: LlamaEngine, ggufs: Ggufs
) -> None:
    engine = fresh
    assert engine.resident() == []
    source = claim({}, contextSize=256).model_source
    engine.preload(source, {"tiny.gguf": ggufs.plain, "notes.bin": ggufs.plain.parent / "n"})
    assert engine.loads == 1 and engine.resident() == [str(ggufs.plain)]
    assert engine.context_size == 256  # the job's own load key: context from cliDefaults
    run(engine, ggufs.plain, {"maxTokens": 2}, contextSize=256)
    assert engine.loads == 1
    engine.unload()
    assert engine.resident() == []
    with pytest.raises(JobError, match="could not load model"):
        engine.preload(source, {"tiny.gguf": ggufs.plain.parent / "missing.gguf"})


def test_cancel_lands_between_tokens(fresh: LlamaEngine, ggufs: Ggufs) -> None:
    engine = fresh
    cancel = threading.Event()
    progress = Recorder(cancel_on="generating", cancel=cancel)
    with pytest.raises(JobError) as err:
        run(engine, ggufs.plain, progress=progress, cancel=cancel)
    assert err.value.message == "cancelled" and err.value.retryable is True
    assert engine.loads == 1  # it was loaded and generating when the cancel came
    assert progress.events[-1][1].startswith("generating")
    # the engine is still usable afterwards
    value = run(engine, ggufs.plain)
    assert value["choices"][0]["message"]["content"] == TINY_ANSWER
    assert engine.loads == 1


def test_cancel_before_start_loads_nothing(fresh: LlamaEngine, ggufs: Ggufs) -> None:
    engine = fresh
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(JobError, match=r"^cancelled$"):
        run(engine, ggufs.plain, cancel=cancel)
    assert engine.loads == 0


@pytest.mark.parametrize("keep", ["header", "tensors"])
def test_truncated_gguf_is_a_clear_load_error(
    tmp_path: Path, ggufs: Ggufs, engine: LlamaEngine, keep: str
) -> None:
    data = ggufs.plain.read_bytes()
    cut = tmp_path / "tiny.gguf"
    cut.write_bytes(data[:1000] if keep == "header" else data[: len(data) - 4096])
    with pytest.raises(JobError) as err:
        run(engine, cut)
    assert err.value.message.startswith("could not load model tiny.gguf: ")
    assert err.value.retryable is True
    if keep == "tensors":  # llama.cpp's own reason is carried along
        assert err.value.message.endswith(")") and "(" in err.value.message


def test_not_a_gguf_at_all(tmp_path: Path) -> None:
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"PK\x03\x04 a zip, not a model")
    with pytest.raises(GgufError, match="bad magic"):
        gguf_trained_context(bad)


def test_json_schema_constrains_the_answer(engine: LlamaEngine, ggufs: Ggufs) -> None:
    schema = {"type": "object", "properties": {"ok": {"type": "boolean"}}, "required": ["ok"]}
    value = run(engine, ggufs.plain, {"jsonSchema": schema, "maxTokens": 60})
    parsed = json.loads(value["choices"][0]["message"]["content"])
    assert set(parsed) == {"ok"} and isinstance(parsed["ok"], bool)
    # the OpenAI response_format wrapper is accepted too
    wrapped = run(
        engine, ggufs.plain, {"jsonSchema": {"name": "x", "schema": schema}, "maxTokens": 60}
    )
    assert json.loads(wrapped["choices"][0]["message"]["content"]) == parsed


def test_unusable_json_schema_is_a_terminal_error(engine: LlamaEngine, ggufs: Ggufs) -> None:
    with pytest.raises(JobError) as err:
        run(engine, ggufs.plain, {"jsonSchema": "{not json"})
    assert err.value.message.startswith("jsonSchema is not valid JSON: ")
    assert err.value.retryable is False
    with pytest.raises(JobError) as err:
        run(engine, ggufs.plain, {"jsonSchema": {"$ref": "#/definitions/missing"}})
    assert err.value.message.startswith("jsonSchema: ")
    assert err.value.retryable is False


def test_model_file_choice_and_wrong_kind(engine: LlamaEngine, ggufs: Ggufs) -> None:
    stt = JobOfferClaim.model_validate(
        {
            **claim({}).model_dump(by_alias=True),
            "task": {"kind": "audio_stt", "inputUrl": "https://h/a.wav"},
        }
    )
    with pytest.raises(CannotServe, match="llama engine cannot serve audio_stt tasks"):
        engine.run(stt, {}, Recorder(), threading.Event())
    no_gguf = claim({}, filename="weights.bin")
    with pytest.raises(JobError, match=r"no \.gguf model file") as err:
        engine.run(no_gguf, {"weights.bin": ggufs.plain}, Recorder(), threading.Event())
    assert err.value.retryable is False


def test_models_per_kind_lists_pre_placed_stems(tmp_path: Path) -> None:
    assert LlamaEngine(tmp_path).models_per_kind() == {TaskKind.LLM: ["llama-cpp:*"]}
    (tmp_path / "llm").mkdir()
    for name in ("qwen3.5-2b.gguf", "alpha.gguf", "readme.txt"):
        (tmp_path / "llm" / name).write_bytes(b"")
    assert LlamaEngine(tmp_path).models_per_kind() == {
        TaskKind.LLM: ["alpha", "qwen3.5-2b", "llama-cpp:*"]
    }


def test_constructing_the_engines_imports_no_heavy_library(tmp_path: Path) -> None:
    code = (
        "import sys\nfrom pathlib import Path\n"
        "from studio_worker.engines.llm import LlamaEngine\n"
        "from studio_worker.engines.stt import WhisperEngine\n"
        "from studio_worker.engines.availability import installed\n"
        f"LlamaEngine(Path({str(tmp_path)!r})).models_per_kind()\n"
        "WhisperEngine().models_per_kind()\n"
        "assert installed('json') and not installed('no_such_module_here')\n"
        "assert not installed('no_such_parent.child')\n"
        "heavy = {'llama_cpp', 'faster_whisper', 'ctranslate2', 'numpy', 'jinja2', 'av'}\n"
        "print(sorted(heavy & set(sys.modules)))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout.strip() == "[]"


def test_a_job_writes_nothing_to_stdout(ggufs: Ggufs, tmp_path: Path) -> None:
    # the engine host may talk to its parent over stdout: llama.cpp must stay off it
    code = (
        "import sys, threading\nfrom pathlib import Path\n"
        "from studio_worker.domain.tasks import JobOfferClaim\n"
        "from studio_worker.engines.llm import LlamaEngine\n"
        f"claim = JobOfferClaim.model_validate_json({claim({}).model_dump_json(by_alias=True)!r})\n"
        f"engine = LlamaEngine(Path({str(tmp_path)!r}))\n"
        f"result = engine.run(claim, {{'tiny.gguf': Path({str(ggufs.plain)!r})}},"
        " lambda f, n: None, threading.Event())\n"
        "sys.stderr.write(result.value['choices'][0]['message']['content'])\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert out.stdout == ""
    assert out.stderr.endswith(TINY_ANSWER)
