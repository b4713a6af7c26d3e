"""The Nuitka-built binary, not the Python package: version, demo, a real session, install.

Every test here runs the executable from the release archive (see conftest.py), against a
self-hosted studio on loopback where a studio is needed, and installs the archive with
installers/install.sh from a fake release served on loopback into a temporary HOME.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
import subprocess
import wave
from pathlib import Path

import pytest
from fake_release import host_triple, link, run, serve_release, version_of, versions_dir
from PIL import Image
from processes import StudioProcess, WorkerProcess, approve, worker_config

from studio_worker import __version__

FIVE_KINDS = [
    ("image", {"prompt": "a lantern", "ext": "png", "width": 64, "height": 64}),
    ("llm", {"messages": [{"role": "user", "content": "Name three dragons."}]}),
    ("audio_stt", {"inputUrl": "https://assets.example/a.wav"}),
    ("audio_tts", {"text": "hello there"}),
    ("video", {"prompt": "a fox", "seconds": 1, "fps": 4, "width": 64, "height": 64}),
]


def clean_env(home: Path) -> dict[str, str]:
    """No virtualenv, no PYTHONPATH: the binary must stand on its own."""
    return {
        "HOME": str(home),
        "PATH": "/usr/bin:/bin",
        "LC_ALL": "C",
        "STUDIO_WORKER_REGISTRATION_POLL_SECS": "0.3",
    }


def test_the_archive_is_one_folder_with_a_matching_checksum(archive: Path, unpacked: Path) -> None:
    digest, name = archive.with_name(archive.name + ".sha256").read_text().split()
    assert name == archive.name
    assert hashlib.sha256(archive.read_bytes()).hexdigest() == digest
    assert unpacked.name == f"studio-worker-{__version__}-{host_triple()}"
    assert archive.name == f"{unpacked.name}.tar.gz"
    assert (unpacked / ".variant").read_text().strip() == "cpu"


def test_version_names_the_version_and_the_variant(binary: Path, tmp_path: Path) -> None:
    done = subprocess.run(
        [str(binary), "--version"],
        env=clean_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert done.stdout == f"studio-worker {__version__} (cpu)\n"


def test_the_demo_runs_from_the_binary(binary: Path, tmp_path: Path) -> None:
    out = tmp_path / "demo-output"
    done = subprocess.run(
        [str(binary), "demo", "--output", str(out)],
        env=clean_env(tmp_path),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count(" done ") == 5, done.stdout
    with Image.open(out / "image.webp") as image:
        assert image.size[0] > 0
    with wave.open(str(out / "audio_tts.wav")) as wav:
        assert wav.getsampwidth() == 2 and wav.getnframes() > 0
    assert json.loads((out / "llm.json").read_text())["choices"][0]["message"]["content"]
    assert json.loads((out / "audio_stt.json").read_text())["text"]
    with Image.open(out / "video.webp") as video:
        assert getattr(video, "n_frames", 1) > 1


def test_the_binary_registers_connects_and_serves_every_kind(binary: Path, tmp_path: Path) -> None:
    studio = StudioProcess(tmp_path / "studio")
    config = worker_config(tmp_path, studio.url)
    worker = WorkerProcess(config, tmp_path / "worker.log", command=[str(binary)])
    try:
        approve(studio)
        jobs = {kind: studio.submit(kind, task) for kind, task in FIVE_KINDS}
        for kind, job_id in jobs.items():
            job = studio.wait_job(job_id, timeout=60)
            assert job["status"] == "done", (kind, job, worker.log)
        workers = studio.get("/admin/workers")
        assert [w["capabilities"].get("agentVersion") for w in workers] == [__version__]
        png = studio.admin.get(f"/admin/jobs/{jobs['image']}/result")
        with Image.open(io.BytesIO(png.content)) as image:
            assert image.format == "PNG"
    finally:
        code = worker.stop()
        studio.stop()
    assert code == 0, worker.log
    assert "Traceback" not in worker.log


@pytest.mark.skipif(os.name != "posix", reason="install.sh is the POSIX installer")
def test_install_sh_installs_the_built_archive_from_a_release(
    archive: Path, tmp_path: Path
) -> None:
    home = tmp_path / "home"
    home.mkdir()
    with serve_release(tmp_path / "mirror") as release:
        release.publish_archive(archive, __version__)
        done = run(home, release)
    assert done.returncode == 0, done.stdout + done.stderr
    assert version_of(home) == f"studio-worker {__version__} (cpu)"
    installed = versions_dir(home) / __version__ / "studio-worker"
    assert link(home).resolve() == installed.resolve()
    status = subprocess.run(
        [str(link(home)), "status", "--json"],
        env=clean_env(home),
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert json.loads(status.stdout)["registration"]["state"] == "pristine"
