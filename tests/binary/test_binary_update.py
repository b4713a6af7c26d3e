"""Self-update with the built binary, not the Python package (tests/platform/update_live.py
has the rig: a real studio process, a TUF repository made by build/tuf_repo.py on a
loopback server, the installed layout, a supervisor that restarts like the service).

CI builds one archive per run and its version is compiled in, so both releases here are
that build: v1 is the archive installed as the installers lay it out
(`<root>/<v1>/studio-worker`, `current -> <v1>`, the repository's root as
`update-root.json`), v2 is the same archive published to the repository as the next
major version (`tuf_repo.py add --version`, what a release does with its archive), so the
worker downloads and verifies a real 60 MB release through the compiled
tufup/python-tuf/securesystemslib/cryptography stack and installs it into `<root>/<v2>`.
The updater knows its version from the install directory, so after the switch it runs as
v2 (`check-update` says `up to date: <v2>`); the studio still sees the compiled
`agentVersion` (v1): what changes there is the connection (a disconnection, then the new
process connected), not the version string.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

pytest.importorskip("tufup", reason="publishing needs the `update` extra (tufup)")
pytestmark = [
    pytest.mark.skipif(
        not sys.platform.startswith("linux"), reason="reads /proc/<pid>/exe; the rig is POSIX"
    ),
    # a release build with every engine is ~300 MB packed, ~820 MB unpacked: publishing it
    # again, downloading, verifying and unpacking it takes minutes here, not seconds
    pytest.mark.timeout(600),
]

from packaging.version import Version  # noqa: E402
from update_live import ConnectionWatch, LiveRig, repack_once, tuf_repo, wait_for  # noqa: E402

from studio_worker.platform import updater as up  # noqa: E402


@pytest.fixture(scope="module")
def versions(archive: Path) -> tuple[str, str]:
    """(v1, v2): the build's own version, and the next major one it is published as."""
    v1, _target = tuf_repo.parse_release_name(archive.name)
    return v1, f"{Version(v1).major + 1}.0.0"


@pytest.fixture(scope="module")
def repacked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """One repack of the 60 MB build for the whole module (it is reproducible)."""
    with repack_once(tmp_path_factory.mktemp("repacked")):
        yield


@pytest.fixture
def rig(
    tmp_path: Path, archive: Path, versions: tuple[str, str], repacked: None
) -> Iterator[LiveRig]:
    live = LiveRig(tmp_path, installed=versions[0], build=archive)
    try:
        yield live
    finally:
        live.close()


def exe_of(pid: int) -> str:
    return os.readlink(f"/proc/{pid}/exe")


def running(rig: LiveRig, v1: str) -> int:
    """Start the installed binary, approve it, wait for its session; returns its pid."""
    service = rig.start()
    rig.approve()
    rig.wait_connected(v1)
    assert service.proc is not None
    pid = service.proc.pid
    assert exe_of(pid) == str(rig.root / v1 / up.EXE_NAME)
    return pid


def test_the_binary_finds_verifies_installs_and_reexecutes_into_the_next_release(
    rig: LiveRig, versions: tuple[str, str]
) -> None:
    v1, v2 = versions
    pid = running(rig, v1)
    service = rig.service
    assert service is not None

    checked = rig.cli("check-update")  # the binary's CLI, through the binary daemon
    assert (checked.returncode, checked.stdout.strip()) == (0, f"up to date: {v1}"), checked
    rig.feed.publish(v2)
    checked = rig.cli("check-update")
    assert (checked.returncode, checked.stdout.strip()) == (0, f"update available: {v1} -> {v2}")
    assert rig.current() == v1 and not (rig.root / v2).exists()  # a check never installs

    watch = ConnectionWatch(rig.studio_view)
    try:
        triggered = time.monotonic()
        answer = rig.daemon_post("/daemon/update/install")
        assert answer.status_code == 200, answer.text
        assert answer.json()["message"] == f"update installed: {v1} -> {v2}"

        new_exe = str(rig.root / v2 / up.EXE_NAME)
        wait_for(lambda: exe_of(pid) == new_exe, 60, f"pid {pid} to become {new_exe}")
        wait_for(lambda: watch.reconnected_after(triggered), 60, "the studio to see it again")
    finally:
        watch.close()
    assert len(service.starts) == 1  # the same process re-executed, not a supervisor restart
    assert rig.current() == v2
    wait_for((rig.root / v2 / up.HEALTHY_MARKER).exists, 30, f"{v2}/.healthy")
    assert rig.connected_as(v1)  # the compiled agentVersion: the same build

    job = rig.studio.submit("image", {"prompt": "after", "ext": "png", "width": 64, "height": 64})
    assert rig.studio.wait_job(job, 60)["status"] == "done"  # served by the new process
    assert exe_of(pid) == new_exe

    again = rig.cli("check-update")  # the updater's version is the install directory's
    assert (again.returncode, again.stdout.strip()) == (0, f"up to date: {v2}"), again
    state = up.load_state(rig.root / up.UPDATE_DIR / up.STATE_FILE)
    assert (state.pending, state.previous, state.bad) == (None, v1, ())
    assert (rig.root / v1 / up.EXE_NAME).is_file()  # kept as the one to roll back to
    shipped = [entry["message"] for entry in rig.studio_logs()]
    assert f"update {v2} installed; restarting into it" in shipped, shipped
    assert service.log.count("studio-worker booting:") == 2, service.log


def test_the_binary_refuses_a_tampered_archive_and_keeps_running(
    rig: LiveRig, versions: tuple[str, str]
) -> None:
    v1, v2 = versions
    pid = running(rig, v1)
    rig.feed.publish(v2)
    target = rig.feed.target(v2)
    with open(target, "r+b") as handle:  # same length, other bytes
        handle.seek(target.stat().st_size // 2)
        byte = handle.read(1)
        handle.seek(-1, os.SEEK_CUR)
        handle.write(bytes([byte[0] ^ 0xFF]))

    answer = rig.daemon_post("/daemon/update/install")
    body = answer.json()
    assert body["outcome"] == "refused", body
    assert "does not match its signed hash or length" in body["detail"], body
    assert "tampered or corrupted download" in body["detail"]
    assert rig.current() == v1 and not (rig.root / v2).exists()
    assert not list(rig.root.glob(f"{up.STAGING_PREFIX}*"))
    assert exe_of(pid) == str(rig.root / v1 / up.EXE_NAME)
    assert rig.connected_as(v1)
    wait_for(
        lambda: any(
            entry["message"].startswith(f"update {v2} refused: archive does not match")
            for entry in rig.studio_logs()
        ),
        30,
        "the refusal in the studio's log of this worker",
    )
    job = rig.studio.submit("image", {"prompt": "still", "ext": "png", "width": 64, "height": 64})
    assert rig.studio.wait_job(job, 60)["status"] == "done"  # the slot is free again


def test_the_binary_refuses_tampered_metadata_and_keeps_running(
    rig: LiveRig, versions: tuple[str, str]
) -> None:
    v1, v2 = versions
    pid = running(rig, v1)
    rig.feed.publish(v2)
    timestamp = rig.feed.repo / "metadata" / "timestamp.json"
    signed = json.loads(timestamp.read_text())
    signed["signed"]["version"] += 1  # the signature no longer matches
    timestamp.write_text(json.dumps(signed))

    checked = rig.cli("check-update")
    assert checked.returncode == 1, checked
    assert checked.stderr.startswith("refused: metadata signature check failed"), checked.stderr
    answer = rig.daemon_post("/daemon/update/install")
    assert answer.json()["outcome"] == "refused", answer.text
    assert rig.current() == v1 and not (rig.root / v2).exists()
    assert exe_of(pid) == str(rig.root / v1 / up.EXE_NAME)
    assert rig.connected_as(v1)
