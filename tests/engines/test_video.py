"""Video jobs: the frame plan, the encoders (bundled ffmpeg), and whole clips drawn by the
sd-cpp engine on the tiny model, decoded back with PyAV.
"""

from __future__ import annotations

import io
import threading
from fractions import Fraction
from typing import TYPE_CHECKING, Any

import pytest
from PIL import Image, ImageChops
from sd_fixtures import (
    GenerateSpy,
    Recorder,
    engine_fixture,  # noqa: F401
    probe_video,
    run,
    spy_fixture,  # noqa: F401
    tiny_fixture,  # noqa: F401
)

from fixtures.tiny_sd import TinySd
from studio_worker.domain.results import JobError
from studio_worker.domain.tasks import VideoTask
from studio_worker.engines.image import DEFAULT_STRENGTH, SdCppEngine
from studio_worker.engines.video import (
    DEFAULT_FPS,
    MAX_FRAMES,
    NEXT_FRAME_STRENGTH,
    encode_video,
    plan_video,
)

if TYPE_CHECKING:
    from conftest import Served

pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg (the bundled ffmpeg) is missing")
pytest.importorskip("av", reason="PyAV is needed to decode the results")


def video_task(**task: Any) -> dict[str, Any]:
    return {"prompt": "a red cat", "width": 48, "height": 32, "seconds": 0.5, "fps": 8, **task}


# -- the plan -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("seconds", "fps", "frames", "rate"),
    [
        (2.0, None, 16, DEFAULT_FPS),  # the default fps
        (1.0, 12, 12, 12),
        (0.3, 10, 3, 10),
        (0.25, 10, 3, 10),  # 2.5 rounds half up
        (0.01, 8, 1, 8),  # at least one frame
        (0.0, 8, 1, 8),
        (-3.0, 8, 1, 8),
        (3600 / 10, 24, MAX_FRAMES, 24),  # capped
    ],
)
def test_frames_are_seconds_times_fps(
    seconds: float, fps: int | None, frames: int, rate: int
) -> None:
    plan = plan_video(VideoTask(prompt="p", seconds=seconds, fps=fps), 64, 64)
    assert (plan.frames, plan.fps) == (frames, rate)


def test_yuv420p_sides_are_even() -> None:
    mp4 = plan_video(VideoTask(prompt="p"), 65, 33)
    assert (mp4.width, mp4.height) == (66, 34)
    gif = plan_video(VideoTask(prompt="p", ext="gif"), 65, 33)
    assert (gif.width, gif.height) == (65, 33)


@pytest.mark.parametrize(
    ("task", "message"),
    [
        ({"ext": "avi"}, "video ext `avi` is not supported"),
        ({"fps": 240}, "fps 240 is above"),
        ({"seconds": float("nan")}, "seconds must be"),
    ],
)
def test_plan_refusals(task: dict[str, Any], message: str) -> None:
    with pytest.raises(JobError, match=message) as info:
        plan_video(VideoTask.model_validate({"prompt": "p", **task}), 64, 64)
    assert info.value.retryable is False


# -- the encoders -------------------------------------------------------------------------


def colour_frames(count: int, size: tuple[int, int] = (48, 32)) -> list[Image.Image]:
    return [Image.new("RGB", size, (i * 60 % 256, 100, 255 - i * 60 % 256)) for i in range(count)]


@pytest.mark.parametrize(("ext", "codec"), [("mp4", "h264"), ("webm", "vp9"), ("gif", "gif")])
def test_encode_video(ext: str, codec: str) -> None:
    data = encode_video(colour_frames(5), fps=10, ext=ext)
    info = probe_video(data)
    assert (info.codec, info.frames, info.width, info.height) == (codec, 5, 48, 32)
    assert info.fps == 10
    assert info.seconds == pytest.approx(0.5)


def test_mp4_is_h264_yuv420p_with_faststart() -> None:
    import av

    data = encode_video(colour_frames(3), fps=8, ext="mp4")
    assert data.find(b"moov") < data.find(b"mdat")  # faststart: the index comes first
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        assert stream.codec_context.name == "h264"
        assert stream.codec_context.pix_fmt == "yuv420p"


def test_encode_refusals() -> None:
    with pytest.raises(JobError, match="no frames"):
        encode_video([], fps=8, ext="mp4")
    mixed = [Image.new("RGB", (32, 32)), Image.new("RGB", (48, 32))]
    with pytest.raises(JobError, match="frame of 48×32 in a 32×32 video"):
        encode_video(mixed, fps=8, ext="gif")


# -- whole clips from the tiny model ------------------------------------------------------


@pytest.mark.parametrize(("ext", "codec"), [("mp4", "h264"), ("webm", "vp9"), ("gif", "gif")])
def test_video_job(engine: SdCppEngine, tiny: TinySd, ext: str, codec: str) -> None:
    progress = Recorder()
    result = run(engine, tiny, "video", video_task(ext=ext), progress=progress)
    assert result.ext == ext
    info = probe_video(result.data)
    assert (info.codec, info.frames, info.width, info.height) == (codec, 4, 48, 32)
    # GIF delays are whole 1/100 s: 12.5 is stored as 12 or 13
    assert info.fps == (pytest.approx(8, rel=0.05) if ext == "gif" else Fraction(8))
    assert info.seconds == pytest.approx(0.5, rel=0.05)
    notes = progress.notes
    assert [n for n in notes if n.startswith("frame ") and "step" not in n] == [
        f"frame {i}/4" for i in range(1, 5)
    ]
    assert notes[-2:] == [f"encoding {ext}", "done"]
    fractions = [f for f, _ in progress.events]
    assert fractions == sorted(fractions) and fractions[-1] == 1.0


def test_the_default_is_mp4_at_8_fps(engine: SdCppEngine, tiny: TinySd) -> None:
    result = run(engine, tiny, "video", video_task(fps=None, seconds=0.25))
    assert result.ext == "mp4"
    info = probe_video(result.data)
    assert (info.frames, info.fps) == (2, 8)


def test_frames_follow_each_other(engine: SdCppEngine, tiny: TinySd, spy: GenerateSpy) -> None:
    """Frame 1 from the prompt; every next one img2img from the previous, same seed."""
    run(engine, tiny, "video", video_task(seconds=0.375, ext="gif"))
    first, *rest = spy.calls
    assert "init_image" not in first
    assert [call["strength"] for call in rest] == [NEXT_FRAME_STRENGTH] * 2
    assert len({call["seed"] for call in spy.calls}) == 1
    assert all(call["init_image"].size == (48, 32) for call in rest)


def test_the_first_frame_from_an_init_image(
    engine: SdCppEngine, tiny: TinySd, served: Served, spy: GenerateSpy
) -> None:
    start = Image.new("RGB", (40, 40), (200, 30, 30))
    buffer = io.BytesIO()
    start.save(buffer, "PNG")
    url = served.add("/start.png", buffer.getvalue())
    run(engine, tiny, "video", video_task(initImageUrl=url, seconds=0.25))
    assert served.hits == ["/start.png"]
    first, second = spy.calls
    assert first["strength"] == DEFAULT_STRENGTH
    assert ImageChops.difference(first["init_image"], start).getbbox() is None
    assert second["strength"] == NEXT_FRAME_STRENGTH


def test_a_failed_init_download_fails_the_video(
    engine: SdCppEngine, tiny: TinySd, served: Served, spy: GenerateSpy
) -> None:
    url = served.add("/gone.png", b"", status=404)
    with pytest.raises(JobError, match="-> 404"):
        run(engine, tiny, "video", video_task(initImageUrl=url))
    assert spy.calls == []


def test_cancel_between_frames(engine: SdCppEngine, tiny: TinySd, spy: GenerateSpy) -> None:
    cancel = threading.Event()
    progress = Recorder(cancel_on="frame 2/4", cancel=cancel)
    with pytest.raises(JobError, match="cancelled") as info:
        run(engine, tiny, "video", video_task(), progress=progress, cancel=cancel)
    assert info.value.retryable is True
    assert len(spy.calls) == 2  # the frame in flight finishes, no third one starts
    assert not any(n.startswith("encoding") for n in progress.notes)
