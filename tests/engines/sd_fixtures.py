"""Fixtures shared by the sd-cpp engine tests: the tiny model, one resident engine, offers,
a spy on the binding's `generate_image`, and decoding of video results with PyAV.

A test module imports the fixtures it uses (`from sd_fixtures import engine_fixture, …`);
each is registered under its short name (`engine`, `tiny`, `spy`).
"""

from __future__ import annotations

import io
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any

import pytest

from fixtures.tiny_sd import TinySd, tiny_sd
from studio_worker.domain.results import BinaryResult
from studio_worker.domain.tasks import JobOfferClaim
from studio_worker.engines.image import SdCppEngine

SIZE = 64
FAST = {"steps": 2}  # cliDefaults of the tiny model


@pytest.fixture(name="tiny", scope="session")
def tiny_fixture() -> TinySd:
    pytest.importorskip("stable_diffusion_cpp", reason="stable-diffusion-cpp-python is missing")
    pytest.importorskip("gguf", reason="gguf is not installed")
    return tiny_sd()


@pytest.fixture(name="engine", scope="session")
def engine_fixture(tiny: TinySd) -> Iterator[SdCppEngine]:
    engine = SdCppEngine()
    yield engine
    engine.unload()


def source(tiny: TinySd, cli: dict[str, Any] | None = None, **files: str) -> dict[str, Any]:
    """A wire ModelSource for the tiny model; `files` maps role -> filename overrides."""
    roles = {role: path.name for role, path in tiny.files()}
    roles.update(files)
    return {
        "engine": "sd-cpp",
        "files": [
            {"role": role, "url": f"https://studio.test/{name}", "filename": name}
            for role, name in roles.items()
            if name
        ],
        "cliDefaults": FAST if cli is None else cli,
    }


def claim(
    tiny: TinySd, kind: str, task: dict[str, Any], *, cli: dict[str, Any] | None = None
) -> JobOfferClaim:
    return JobOfferClaim.model_validate(
        {
            "jobId": "job-1",
            "gameId": "g",
            "assetName": "a",
            "model": "tiny-ovis",
            "vramGbEstimate": 0.1,
            "task": {"kind": kind, **task},
            "modelSource": source(tiny, cli),
        }
    )


def image_task(**task: Any) -> dict[str, Any]:
    return {"prompt": "a red cat", "width": SIZE, "height": SIZE, "seed": 7, "ext": "png", **task}


class Recorder:
    def __init__(self, cancel_on: str | None = None, cancel: threading.Event | None = None):
        self.events: list[tuple[float, str]] = []
        self._cancel_on, self._cancel = cancel_on, cancel

    def __call__(self, fraction: float, note: str) -> None:
        self.events.append((fraction, note))
        if self._cancel_on and self._cancel_on in note and self._cancel:
            self._cancel.set()

    @property
    def notes(self) -> list[str]:
        return [note for _, note in self.events]


def run(
    engine: SdCppEngine,
    tiny: TinySd,
    kind: str,
    task: dict[str, Any],
    *,
    cli: dict[str, Any] | None = None,
    progress: Recorder | None = None,
    cancel: threading.Event | None = None,
) -> BinaryResult:
    paths = {path.name: path for _, path in tiny.files()}
    result = engine.run(
        claim(tiny, kind, task, cli=cli),
        paths,
        progress or Recorder(),
        cancel or threading.Event(),
    )
    assert isinstance(result, BinaryResult)
    return result


@dataclass
class GenerateSpy:
    """Records the keyword arguments of every `generate_image` call, then makes it."""

    calls: list[dict[str, Any]] = field(default_factory=list)

    def wrap(self, real: Any) -> Any:
        def generate_image(**kwargs: Any) -> Any:
            self.calls.append(kwargs)
            return real(**kwargs)

        return generate_image


@pytest.fixture(name="spy")
def spy_fixture(engine: SdCppEngine, tiny: TinySd, monkeypatch: pytest.MonkeyPatch) -> GenerateSpy:
    """A spy on the resident context (loaded first with the default options)."""
    run(engine, tiny, "image", image_task())
    recorder = GenerateSpy()
    context = engine._sd
    monkeypatch.setattr(context, "generate_image", recorder.wrap(context.generate_image))
    return recorder


# -- video results ------------------------------------------------------------------------


@dataclass(frozen=True)
class VideoInfo:
    codec: str
    frames: int
    fps: Fraction
    width: int
    height: int
    seconds: float


def probe_video(data: bytes) -> VideoInfo:
    """Decode every frame with PyAV: codec, frame count, fps, size and duration."""
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        codec = stream.codec_context.name
        rate = stream.average_rate or stream.guessed_rate
        times = [float(f.time) for f in frames if f.time is not None]
    if len(times) >= 2:  # GIF stores per-frame delays: measure them
        step = (times[-1] - times[0]) / (len(times) - 1)
        measured = Fraction(1 / step).limit_denominator(100)
        fps = measured if rate is None or codec == "gif" else Fraction(rate)
    else:
        fps = Fraction(rate) if rate else Fraction(0)
    seconds = len(frames) / float(fps) if fps else 0.0
    return VideoInfo(codec, len(frames), fps, frames[0].width, frames[0].height, seconds)
