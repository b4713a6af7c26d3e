"""The ffmpeg that ships inside the `imageio-ffmpeg` wheel: one way to run it, bytes in/out.

Engines use it to encode what they made (TTS to mp3/ogg, video frames to mp4/webm/gif).
It runs as a subprocess with stdin/stdout pipes, so nothing touches the disk unless an
encoder needs a seekable output (mp4), in which case a temporary file is used.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

from studio_worker.domain.results import JobError

TIMEOUT_S = 600.0


def ffmpeg_exe() -> str:
    """Path of the bundled ffmpeg; a clear job error when the wheel is missing."""
    try:
        import imageio_ffmpeg
    except ImportError:
        raise JobError(
            "ffmpeg is not available: install the `imageio-ffmpeg` package "
            "(it ships ffmpeg inside the wheel)",
            retryable=True,
        ) from None
    exe: str = imageio_ffmpeg.get_ffmpeg_exe()
    return exe


def run_ffmpeg(
    args: Sequence[str],
    stdin: bytes = b"",
    *,
    output_suffix: str | None = None,
    cancel: threading.Event | None = None,
    timeout_s: float = TIMEOUT_S,
) -> bytes:
    """Run `ffmpeg -hide_banner -loglevel error <args…> <out>`; return the output bytes.

    With `output_suffix` the output goes to a temporary file of that suffix (for
    containers that need to seek, like mp4); otherwise to stdout (`pipe:1`). `args` must
    end just before the output (the caller gives `-f <format>` when writing to a pipe).
    """
    with tempfile.TemporaryDirectory(prefix="studio-worker-ffmpeg-") as tmp:
        out = str(Path(tmp) / f"out{output_suffix}") if output_suffix else "pipe:1"
        command = [ffmpeg_exe(), "-hide_banner", "-loglevel", "error", "-y", *args, out]
        proc = subprocess.Popen(
            command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        if cancel is not None:
            threading.Thread(target=_kill_on_cancel, args=(proc, cancel), daemon=True).start()
        try:
            stdout, stderr = proc.communicate(stdin, timeout=timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.communicate()
            raise JobError(f"ffmpeg took longer than {timeout_s:.0f} s", retryable=True) from None
        if cancel is not None and cancel.is_set():
            raise JobError("cancelled", retryable=True)
        if proc.returncode != 0:
            last = stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
            raise JobError(f"ffmpeg exited {proc.returncode}: {last[0]}", retryable=False)
        if output_suffix:
            return Path(out).read_bytes()
        return stdout


def _kill_on_cancel(proc: subprocess.Popen[bytes], cancel: threading.Event) -> None:
    while proc.poll() is None:
        if cancel.wait(0.1):
            proc.kill()
            return


def has_ffmpeg() -> bool:
    try:
        return os.path.exists(ffmpeg_exe())
    except JobError:
        return False
