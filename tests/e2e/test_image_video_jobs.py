"""Image and video jobs end to end on a real (tiny) diffusion model.

The self-hosted studio serves the three model files (DiT, Qwen3 text encoder, VAE) from its
shelf with sha256; the worker downloads and verifies them, stable-diffusion.cpp loads them
in the sd-cpp engine's host process, draws, and the result comes back by multipart upload
and is stored by the studio with its ext, MIME type and size.
"""

from __future__ import annotations

import io
import os
import shutil
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from live_worker import stored, studio_and_worker
from PIL import Image

from studio_worker.app import Daemon
from studio_worker.engines.host import HostedEngine
from studio_worker.studio.records import JobRecord
from studio_worker.studio.server import StudioServer

TESTS = Path(__file__).resolve().parents[1]
if str(TESTS) not in sys.path:
    sys.path.insert(0, str(TESTS))

from fixtures.tiny_sd import TinySd, tiny_sd  # noqa: E402

pytest.importorskip("stable_diffusion_cpp", reason="stable-diffusion-cpp-python is not installed")
pytest.importorskip("imageio_ffmpeg", reason="imageio-ffmpeg is not installed")
pytest.importorskip("gguf", reason="gguf is not installed")
pytest.importorskip("av", reason="PyAV is needed to decode the video result")

MODEL = "tiny-ovis"
JOB_TIMEOUT_S = 90


@dataclass
class Rig:
    studio: StudioServer
    daemon: Daemon
    models_root: Path
    tiny: TinySd

    def engine(self) -> HostedEngine:
        engine = self.daemon.engines.resolve("sd-cpp", MODEL)
        assert isinstance(engine, HostedEngine)
        return engine

    def source(self) -> dict[str, Any]:
        files = [self.studio.shelf_file(path.name, role=role) for role, path in self.tiny.files()]
        return {"engine": "sd-cpp", "files": files, "cliDefaults": {"steps": 2, "cfgScale": 0}}

    async def run(self, kind: str, task: dict[str, Any]) -> JobRecord:
        job_id = self.studio.submit_job(kind, task, MODEL, model_source=self.source())
        return await self.studio.wait_for_job(job_id, JOB_TIMEOUT_S)


@pytest.fixture(scope="module")
def tiny() -> TinySd:
    return tiny_sd()


def shelve(source: Path, shelf: Path) -> None:
    try:
        os.link(source, shelf / source.name)
    except OSError:  # another filesystem
        shutil.copy(source, shelf / source.name)


@pytest.fixture
async def rig(tmp_path: Path, tiny: TinySd) -> AsyncIterator[Rig]:
    def stock(shelf: Path) -> None:
        for _, path in tiny.files():
            shelve(path, shelf)

    async with studio_and_worker(tmp_path, stock) as (studio, daemon, models_root):
        yield Rig(studio, daemon, models_root, tiny)


async def test_image_and_video_jobs_end_to_end(rig: Rig) -> None:
    image_job = await rig.run(
        "image", {"prompt": "a red cat", "width": 64, "height": 48, "seed": 7, "ext": "png"}
    )
    data = stored(image_job)
    assert (image_job.ext, image_job.mime) == ("png", "image/png")
    image = Image.open(io.BytesIO(data))
    assert (image.format, image.size) == ("PNG", (64, 48))

    # every file came down once, verified, into the sd-cpp model folder
    folder = rig.models_root / "sd-cpp" / MODEL
    for _, path in rig.tiny.files():
        assert rig.studio.shelf.requests[path.name] == 1
        assert (folder / path.name).stat().st_size == path.stat().st_size

    engine = rig.engine()
    loads, pid = engine.host.loads, engine.host.pid
    assert loads == 1

    video_job = await rig.run(
        "video", {"prompt": "a red cat", "width": 48, "height": 32, "seconds": 1.0, "fps": 8}
    )
    data = stored(video_job)
    assert (video_job.ext, video_job.mime) == ("mp4", "video/mp4")
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = list(container.decode(stream))
        assert stream.codec_context.name == "h264"
        assert stream.average_rate == 8
        duration = float(stream.duration * stream.time_base) if stream.duration else 0.0
    assert len(frames) == 8
    assert (frames[0].width, frames[0].height) == (48, 32)
    assert duration == pytest.approx(1.0, abs=0.01)
    # the same context drew the video: no reload, same engine process, no new downloads
    assert (engine.host.loads, engine.host.pid) == (loads, pid)
    assert all(rig.studio.shelf.requests[p.name] == 1 for _, p in rig.tiny.files())


async def test_a_failed_input_download_fails_the_image_job(rig: Rig) -> None:
    task = {
        "prompt": "a red cat",
        "width": 64,
        "height": 64,
        "initImageUrl": f"{rig.studio.url}/files/no-such-image.png",
    }
    job = await rig.run("image", task)
    assert job.status == "failed"
    assert job.error is not None and "404" in job.error
    assert job.result_path is None
