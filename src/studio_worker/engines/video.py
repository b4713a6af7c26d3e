"""Video from an image model: the frame plan and the encoding (protocol §5.5).

There is no native video model behind `sd-cpp` jobs here: the sd-cpp engine draws a short,
seeded, coherent frame sequence with its image model (the first frame from the prompt, or
from `initImageUrl`; every next frame img2img from the previous one at a low strength with
the same seed), and this module turns the frames into a file with the ffmpeg bundled in
`imageio-ffmpeg`:

| ext | container / codec | notes |
| --- | --- | --- |
| `mp4` (default) | MP4, H.264 (libx264), yuv420p, `+faststart` | plays everywhere |
| `webm` | WebM, VP9 (libvpx-vp9), yuv420p | |
| `gif` | GIF, one palette for the clip, loops forever | GIF delays are 1/100 s |

Anything else fails the job (`retryable: false`). yuv420p needs even sides, so mp4 and
webm round an odd width or height up to the next even number.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from studio_worker.domain.results import JobError
from studio_worker.domain.tasks import VideoTask
from studio_worker.engines.ffmpeg import run_ffmpeg

if TYPE_CHECKING:
    from PIL import Image

DEFAULT_FPS = 8
MAX_FPS = 60
MAX_FRAMES = 240
MAX_SECONDS = 600.0
# img2img strength from one frame to the next: low keeps the clip coherent.
NEXT_FRAME_STRENGTH = 0.3
VIDEO_FORMATS = ("mp4", "webm", "gif")
_EVEN_SIDES = frozenset({"mp4", "webm"})


@dataclass(frozen=True, slots=True)
class VideoPlan:
    frames: int
    fps: int
    width: int
    height: int
    ext: str

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


def video_ext(ext: str) -> str:
    """The container for a requested ext; unknown → a non-retryable JobError."""
    wanted = (ext or "mp4").strip().lower().lstrip(".")
    if wanted not in VIDEO_FORMATS:
        raise JobError(
            f"video ext `{ext}` is not supported: use one of {', '.join(VIDEO_FORMATS)}",
            retryable=False,
        )
    return wanted


def plan_video(task: VideoTask, width: int, height: int) -> VideoPlan:
    """Frames, fps and size of a video task (`width`/`height` already resolved).

    fps = the task's, else 8 (1…60); frames = round(seconds × fps), at least 1, at most
    240. mp4/webm round odd sides up to even (yuv420p).
    """
    ext = video_ext(task.ext)
    fps = task.fps if task.fps is not None and task.fps > 0 else DEFAULT_FPS
    if fps > MAX_FPS:
        raise JobError(f"fps {fps} is above the limit of {MAX_FPS}", retryable=False)
    seconds = task.seconds
    if not math.isfinite(seconds) or seconds > MAX_SECONDS:
        raise JobError(f"seconds must be a number up to {MAX_SECONDS:.0f}", retryable=False)
    frames = max(1, min(MAX_FRAMES, math.floor(seconds * fps + 0.5)))
    if ext in _EVEN_SIDES:
        width, height = width + width % 2, height + height % 2
    return VideoPlan(frames=frames, fps=fps, width=width, height=height, ext=ext)


def _codec_args(ext: str) -> tuple[list[str], str | None]:
    """(output arguments, temporary-file suffix or None for a pipe)."""
    if ext == "mp4":
        return [
            "-c:v", "libx264", "-preset", "veryfast", "-crf", "20",
            "-pix_fmt", "yuv420p", "-movflags", "+faststart", "-f", "mp4",
        ], ".mp4"  # fmt: skip
    if ext == "webm":
        return [
            "-c:v", "libvpx-vp9", "-b:v", "0", "-crf", "32", "-deadline", "realtime",
            "-cpu-used", "8", "-row-mt", "1", "-pix_fmt", "yuv420p", "-f", "webm",
        ], ".webm"  # fmt: skip
    return [
        "-filter_complex", "[0:v]split[a][b];[a]palettegen[p];[b][p]paletteuse",
        "-loop", "0", "-f", "gif",
    ], None  # fmt: skip


def encode_video(
    frames: Sequence[Image.Image],
    *,
    fps: int,
    ext: str,
    cancel: threading.Event | None = None,
) -> bytes:
    """Encode RGB frames of one size into `ext` (mp4, webm or gif) at `fps`."""
    if not frames:
        raise JobError("no frames to encode", retryable=False)
    ext = video_ext(ext)
    width, height = frames[0].size
    raw = bytearray()
    for frame in frames:
        if frame.size != (width, height):
            raise JobError(
                f"frame of {frame.size[0]}×{frame.size[1]} in a {width}×{height} video",
                retryable=False,
            )
        raw += frame.convert("RGB").tobytes()
    source = [
        "-f", "rawvideo", "-pix_fmt", "rgb24", "-s", f"{width}x{height}",
        "-framerate", str(fps), "-i", "pipe:0",
    ]  # fmt: skip
    output, suffix = _codec_args(ext)
    return run_ffmpeg([*source, *output], bytes(raw), output_suffix=suffix, cancel=cancel)
