"""Self-update over loopback: a real TUF repository (build/tuf_repo.py, tufup's repository
tools) served by a local HTTP server, tufup's real client, real archives holding a tiny
executable, a real install root. The repositories are generated here (metadata expires)."""

from __future__ import annotations

import asyncio
import http.server
import io
import json
import logging
import os
import random
import shutil
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tufup", reason="self-update needs the `update` extra (tufup)")

from studio_worker.config.settings import Settings
from studio_worker.jobs.gate import JobGate
from studio_worker.platform import updater as up
from studio_worker.platform.updater import (
    BootDecision,
    InstallLayout,
    Pending,
    UpdateProgress,
    Updater,
    UpdateState,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "build"))
import tuf_repo

TARGET = "x86_64-unknown-linux-gnu"
SRC = Path(__file__).resolve().parents[2] / "src"
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX scripts as executables")

# The tiny "studio-worker" of each release: boots like the daemon (rollback check first),
# crashes when told to, else marks itself healthy and says which version runs.
SCRIPT = """#!{python}
import os, sys
sys.path.insert(0, {src!r})
from pathlib import Path
from studio_worker.platform import updater as u

VERSION = {version!r}
if sys.argv[1:] == ["--version"]:
    print("studio-worker", VERSION)
    sys.exit(0)
layout = u.locate_install(Path(__file__))
assert isinstance(layout, u.InstallLayout), layout
decision = u.boot(layout, max_starts=2)
if decision.action == "rollback":
    print("rollback", VERSION, "->", decision.version, ":", decision.reason, flush=True)
    sys.exit(u.restart_process(layout.executable(decision.version), []))
if {crash!r}:
    print("crash", VERSION, flush=True)
    sys.exit(3)
u.mark_healthy(layout)
print("running", VERSION, flush=True)
"""

BLOB = random.Random(7).randbytes(64 * 1024)  # a "library" shared by every release


def make_release(out: Path, version: str, *, crash: bool = False) -> Path:
    """`studio-worker-<v>-<target>.tar.gz` with one top-level folder, as the build makes."""
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"studio-worker-{version}-{TARGET}.tar.gz"
    top = f"studio-worker-{version}"
    script = SCRIPT.format(python=sys.executable, src=str(SRC), version=version, crash=crash)
    with tarfile.open(archive, "w:gz") as tar:
        for name, data, mode in (
            ("studio-worker", script.encode(), 0o755),
            ("lib/libengine.so", BLOB + version.encode(), 0o644),
        ):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return archive


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        self.server.requests.append(self.path)  # type: ignore[attr-defined]
        super().do_GET()

    def translate_path(self, path: str) -> str:
        self.directory = str(self.server.root)  # type: ignore[attr-defined]
        return super().translate_path(path)


@dataclass
class Feed:
    """A published update repository on a loopback HTTP server."""

    workdir: Path
    releases: Path
    server: http.server.ThreadingHTTPServer
    requests: list[str] = field(default_factory=list)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/"

    @property
    def repo(self) -> Path:
        return self.workdir / tuf_repo.REPO_DIR

    def serve(self, root: Path) -> None:
        self.server.root = root  # type: ignore[attr-defined]

    def publish(self, version: str, *, crash: bool = False) -> tuf_repo.Added:
        archive = make_release(self.releases, version, crash=crash)
        return tuf_repo.add_release(self.workdir, archive)

    def target(self, version: str, *, patch: bool = False) -> Path:
        return self.repo / "targets" / tuf_repo.target_filename(TARGET, version, patch=patch)


@pytest.fixture
def feed(tmp_path: Path) -> Iterator[Feed]:
    workdir = tmp_path / "publish"
    tuf_repo.init_repository(workdir, root_key_dir=tmp_path / "offline-root")
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    f = Feed(workdir, tmp_path / "releases", server)
    server.requests = f.requests  # type: ignore[attr-defined]
    f.serve(f.repo)
    f.publish("1.0.0")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f
    server.shutdown()
    server.server_close()


@pytest.fixture
def layout(tmp_path: Path, feed: Feed) -> InstallLayout:
    """Version 1.0.0 installed as the installers do: <root>/1.0.0 + current -> 1.0.0."""
    root = tmp_path / "install"
    v1 = root / "1.0.0"
    v1.mkdir(parents=True)
    with tarfile.open(feed.target("1.0.0")) as tar:
        tar.extractall(v1)
    shutil.copy(feed.repo / "metadata" / "root.json", v1 / up.ROOT_SEED)
    os.symlink("1.0.0", root / "current")
    found = up.locate_install(v1 / "studio-worker")
    assert isinstance(found, InstallLayout)
    return found


@dataclass
class Rig:
    updater: Updater
    gate: JobGate
    restarts: list[Path]
    progress: list[UpdateProgress]
    settings: dict[str, Any]


def rig(
    layout: InstallLayout | str, feed: Feed, *, gate: JobGate | None = None, **kwargs: Any
) -> Rig:
    gate = gate or JobGate()
    restarts: list[Path] = []
    progress: list[UpdateProgress] = []
    # Interval 0: the updater's floor (min_interval_s, 60 s unless a test shortens it) rules.
    settings: dict[str, Any] = {"auto_update_feed": feed.url, "auto_update_interval_secs": 0}

    def restart(exe: Path) -> None:
        restarts.append(exe)

    updater = Updater(
        layout=layout,
        settings=lambda: Settings(**settings),
        gate=gate,
        restart=restart,
        target=TARGET,
        on_progress=progress.append,
        **kwargs,
    )
    return Rig(updater, gate, restarts, progress, settings)


def run_exe(exe: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(exe), *args], check=False, capture_output=True, text=True, timeout=60
    )


def messages(caplog: pytest.LogCaptureFixture) -> str:
    return "\n".join(r.getMessage() for r in caplog.records)


def assert_still_v1(layout: InstallLayout) -> None:
    assert layout.current() == "1.0.0"
    assert (layout.root / "1.0.0" / "studio-worker").is_file()
    assert not (layout.root / "2.0.0").exists()
    assert not list(layout.root.glob(f"{up.STAGING_PREFIX}*"))


# ---------------------------------------------------------------------------------------
# Found, downloaded, verified, installed, re-executed


async def test_update_installs_atomically_and_restarts_into_the_new_version(
    layout: InstallLayout, feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    feed.publish("2.0.0")
    r = rig(layout, feed)
    started = time.perf_counter()
    result = await r.updater.update_now()
    took = time.perf_counter() - started

    assert result.outcome == "installed", result
    assert (result.current, result.latest) == ("1.0.0", "2.0.0")
    assert layout.current() == "2.0.0"
    assert os.readlink(layout.root / "current") == "2.0.0"  # relative: the root may move
    assert (layout.root / "2.0.0" / "studio-worker").stat().st_mode & 0o111
    assert (layout.root / "1.0.0" / "studio-worker").is_file()  # the old version stays
    assert not list(layout.root.glob(f"{up.STAGING_PREFIX}*"))
    assert r.restarts == [layout.root / "2.0.0" / "studio-worker"]
    assert r.gate.holder == up.GATE_HOLDER  # held until the process is replaced
    state = up.load_state(layout.state_path)
    assert state.pending is not None and state.pending.version == "2.0.0"
    assert state.last_check is not None and state.last_check["outcome"] == "installed"
    summary = up.last_check_summary(layout)
    assert summary is not None and summary.endswith("update installed: 1.0.0 -> 2.0.0")
    assert r.progress and r.progress[-1].done == r.progress[-1].total > 0
    assert "update available 1.0.0 -> 2.0.0" in messages(caplog)
    assert took < 10

    # The restart: the new binary (through `current`, as a service would) boots, is healthy.
    done = run_exe(layout.root / "current" / "studio-worker")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "running 2.0.0"
    v2 = up.locate_install(layout.root / "2.0.0" / "studio-worker")
    assert isinstance(v2, InstallLayout) and v2.healthy("2.0.0")
    state = up.load_state(layout.state_path)
    assert state.pending is None and state.previous == "1.0.0"
    # Checked again from 2.0.0: nothing newer.
    again = await rig(v2, feed).updater.check_now()
    assert again.describe() == "up to date: 2.0.0"


async def test_check_now_never_downloads_an_archive(layout: InstallLayout, feed: Feed) -> None:
    feed.publish("2.0.0")
    r = rig(layout, feed)
    result = await r.updater.check_now()
    assert result.describe() == "update available: 1.0.0 -> 2.0.0"
    assert not [p for p in feed.requests if "/targets/" in p]
    assert layout.current() == "1.0.0" and not (layout.root / "2.0.0").exists()
    assert r.gate.holder is None and r.restarts == []


async def test_the_gate_is_held_during_the_switch(layout: InstallLayout, feed: Feed) -> None:
    feed.publish("2.0.0")
    gate = JobGate()
    seen: list[tuple[str | None, bool]] = []

    class Spy(InstallLayout):
        def switch(self, version: str) -> None:
            seen.append((gate.holder, gate.try_reserve("job-during-install")))
            super().switch(version)

    spy = Spy(layout.root, layout.version, layout.pointer)
    result = await rig(spy, feed, gate=gate).updater.update_now()
    assert result.outcome == "installed"
    assert seen == [("update", False)]  # an offer meanwhile would get `reject busy`


async def test_an_update_waits_for_the_running_job(
    layout: InstallLayout, feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    feed.publish("2.0.0")
    gate = JobGate()
    assert gate.try_reserve("job-1")
    r = rig(layout, feed, gate=gate)
    task = asyncio.create_task(r.updater.update_now())
    for _ in range(200):
        if "waiting for the running job" in messages(caplog):
            break
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)
    assert not task.done()
    assert layout.current() == "1.0.0"  # downloaded and staged, not switched
    assert layout.staging_dir("2.0.0").exists()
    assert gate.holder == "job-1"
    released = time.monotonic()
    gate.release("job-1")
    result = await asyncio.wait_for(task, 10)
    assert result.outcome == "installed"
    assert layout.current() == "2.0.0"
    print(f"job end -> switched and restart asked: {time.monotonic() - released:.3f} s")


async def test_stopping_while_waiting_for_the_job_installs_nothing(
    layout: InstallLayout, feed: Feed
) -> None:
    feed.publish("2.0.0")
    gate = JobGate()
    assert gate.try_reserve("job-1")
    r = rig(layout, feed, gate=gate)
    stop = asyncio.Event()
    task = asyncio.create_task(r.updater.update_now(stop))
    for _ in range(200):
        if layout.staging_dir("2.0.0").exists():
            break
        await asyncio.sleep(0.02)
    stop.set()
    result = await asyncio.wait_for(task, 10)
    assert result.outcome == "cancelled"
    assert_still_v1(layout)
    assert gate.holder == "job-1" and r.restarts == []


async def test_a_version_installed_meanwhile_is_left_in_place(
    layout: InstallLayout, feed: Feed
) -> None:
    """`studio-worker update` from a shell switched to 2.0.0 while the daemon (still 1.0.0)
    runs: the daemon's own install later finds 2.0.0 in use and does not touch its files."""
    feed.publish("2.0.0")
    assert (await rig(layout, feed).updater.update_now()).outcome == "installed"
    inode = (layout.root / "2.0.0").stat().st_ino
    daemon = rig(layout, feed)
    result = await daemon.updater.update_now()
    assert result.outcome == "installed"
    assert (layout.root / "2.0.0").stat().st_ino == inode
    assert layout.current() == "2.0.0"
    assert daemon.restarts == [layout.root / "2.0.0" / "studio-worker"]
    assert not list(layout.root.glob(f"{up.STAGING_PREFIX}*"))


async def test_a_patch_is_used_when_the_current_archive_is_cached(
    layout: InstallLayout, feed: Feed
) -> None:
    added = feed.publish("2.0.0")
    assert added.patch is not None and added.patch_size is not None
    assert added.patch_size < added.archive_size / 4
    layout.targets_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(feed.target("1.0.0"), layout.targets_dir)
    result = await rig(layout, feed).updater.update_now()
    assert result.outcome == "installed"
    fetched = [p for p in feed.requests if "/targets/" in p]
    assert fetched == [f"/targets/{feed.target('2.0.0', patch=True).name}"]
    assert run_exe(layout.root / "current" / "studio-worker").stdout.strip() == "running 2.0.0"


async def test_progress_is_logged_and_reported(
    layout: InstallLayout, feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    feed.publish("2.0.0")
    r = rig(layout, feed)
    await r.updater.update_now()
    total = feed.target("2.0.0").stat().st_size
    assert r.progress[-1] == UpdateProgress("2.0.0", total, total)
    assert "downloading update 2.0.0: 100%" in messages(caplog)


# ---------------------------------------------------------------------------------------
# Refusals: visible, logged, nothing switched


async def test_a_tampered_archive_is_refused(
    layout: InstallLayout, feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    feed.publish("2.0.0")
    archive = feed.target("2.0.0")
    data = bytearray(archive.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same length, other bytes
    archive.write_bytes(bytes(data))
    r = rig(layout, feed)
    result = await r.updater.update_now()
    assert result.outcome == "refused"
    assert "hash" in result.detail
    errors = [rec.getMessage() for rec in caplog.records if rec.levelno >= logging.ERROR]
    assert any(m.startswith("update 2.0.0 refused: archive") for m in errors), errors
    assert_still_v1(layout)
    assert r.gate.holder is None and r.restarts == []


async def test_a_longer_archive_is_refused(layout: InstallLayout, feed: Feed) -> None:
    feed.publish("2.0.0")
    archive = feed.target("2.0.0")
    archive.write_bytes(archive.read_bytes() + b"appended payload")
    result = await rig(layout, feed).updater.update_now()
    assert result.outcome == "refused" and "length" in result.detail
    assert_still_v1(layout)


@pytest.mark.parametrize("archive_too", [False, True])
async def test_a_tampered_patch_is_refused_and_the_archive_used_instead(
    layout: InstallLayout, feed: Feed, caplog: pytest.LogCaptureFixture, archive_too: bool
) -> None:
    feed.publish("2.0.0")
    layout.targets_dir.mkdir(parents=True, exist_ok=True)
    shutil.copy(feed.target("1.0.0"), layout.targets_dir)
    tampered = [feed.target("2.0.0", patch=True)]
    if archive_too:
        tampered.append(feed.target("2.0.0"))
    for path in tampered:
        path.write_bytes(path.read_bytes()[:-8] + b"tampered")
    result = await rig(layout, feed).updater.update_now()
    text = messages(caplog)
    assert "update 2.0.0: patch refused: patch does not match its signed hash" in text
    if archive_too:
        assert result.outcome == "refused"
        assert "update 2.0.0 refused: archive does not match its signed hash" in text
        assert_still_v1(layout)
    else:
        assert result.outcome == "installed"
        assert run_exe(layout.root / "current" / "studio-worker").stdout.strip() == (
            "running 2.0.0"
        )


async def test_a_patch_that_does_not_rebuild_the_archive_is_set_aside(
    layout: InstallLayout, feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    """The cached current archive is corrupt (a disk error): the signed patch applies to it
    but the result fails tufup's check; the full archive is fetched instead."""
    feed.publish("2.0.0")
    layout.targets_dir.mkdir(parents=True, exist_ok=True)
    cached = layout.targets_dir / feed.target("1.0.0").name
    with tarfile.open(feed.target("1.0.0")) as src, tarfile.open(cached, "w:gz") as dst:
        for member in src.getmembers():
            handle = src.extractfile(member)
            data = handle.read() + b"!" if handle else None
            if data is not None:
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    result = await rig(layout, feed).updater.update_now()
    assert result.outcome == "installed", result
    text = messages(caplog)
    assert "update 2.0.0: patch failed verification" in text
    assert layout.current() == "2.0.0"


@pytest.mark.parametrize("role", ["timestamp", "snapshot", "targets"])
async def test_tampered_metadata_is_refused(
    layout: InstallLayout, feed: Feed, caplog: pytest.LogCaptureFixture, role: str
) -> None:
    feed.publish("2.0.0")
    path = feed.repo / "metadata" / f"{role}.json"
    doc = json.loads(path.read_text())
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"  # a change the signature does not cover
    path.write_text(json.dumps(doc))
    r = rig(layout, feed)
    result = await r.updater.update_now()
    assert result.outcome == "refused", result
    assert "signature" in result.detail
    assert "update check refused: metadata signature check failed" in messages(caplog)
    assert_still_v1(layout)
    assert not [p for p in feed.requests if "/targets/" in p]


async def test_expired_metadata_is_refused(
    layout: InstallLayout, feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    feed.publish("2.0.0")
    tuf_repo.refresh(feed.workdir, force=["timestamp"], days={"timestamp": -1})
    result = await rig(layout, feed).updater.update_now()
    assert result.outcome == "refused" and "expired" in result.detail
    assert "update check refused: metadata expired" in messages(caplog)
    assert_still_v1(layout)


async def test_replayed_older_metadata_is_refused(
    tmp_path: Path, layout: InstallLayout, feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    """A mirror (or an attacker) serves a validly signed but older repository."""
    feed.publish("2.0.0")
    old = tmp_path / "old-repository"
    shutil.copytree(feed.repo, old)
    feed.publish("3.0.0")
    r = rig(layout, feed)
    assert (await r.updater.check_now()).latest == "3.0.0"  # the worker now trusts v3's era
    feed.serve(old)
    result = await r.updater.update_now()
    assert result.outcome == "refused"
    assert "older than what this worker already trusts" in result.detail
    assert_still_v1(layout)


async def test_an_older_version_is_never_installed(tmp_path: Path, feed: Feed) -> None:
    """Running 2.0.0 while the repository's newest is 1.0.0: nothing to do."""
    root = tmp_path / "install2"
    (root / "2.0.0").mkdir(parents=True)
    (root / "2.0.0" / "studio-worker").write_text("#!/bin/sh\n")
    shutil.copy(feed.repo / "metadata" / "root.json", root / "2.0.0" / up.ROOT_SEED)
    os.symlink("2.0.0", root / "current")
    layout = up.locate_install(root / "2.0.0" / "studio-worker")
    assert isinstance(layout, InstallLayout)
    result = await rig(layout, feed).updater.update_now()
    assert result.describe() == "up to date: 2.0.0"
    assert layout.current() == "2.0.0" and not (root / "1.0.0").exists()


async def test_an_unreachable_feed_is_a_warning_not_a_refusal(
    layout: InstallLayout, feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    r = rig(layout, feed)
    r.settings["auto_update_feed"] = "http://127.0.0.1:9/nowhere/"
    result = await r.updater.update_now()
    assert result.outcome == "failed"
    assert "check failed: update repository unreachable" in messages(caplog)
    assert_still_v1(layout)


# ---------------------------------------------------------------------------------------
# Settings: channel, disabled, interval, install layout


async def test_prerelease_channel(layout: InstallLayout, feed: Feed) -> None:
    feed.publish("1.1.0-rc.1")
    r = rig(layout, feed)
    assert (await r.updater.check_now()).describe() == "up to date: 1.0.0"
    r.settings["auto_update_prerelease"] = True
    result = await r.updater.update_now()
    assert result.outcome == "installed" and result.latest == "1.1.0-rc.1"  # as published
    assert layout.current() == "1.1.0-rc.1"


async def test_disabled_means_no_network(layout: InstallLayout, feed: Feed) -> None:
    r = rig(layout, feed, tick_s=0.01, min_interval_s=0)
    r.settings["auto_update_enabled"] = False
    stop = asyncio.Event()
    loop = asyncio.create_task(r.updater.run(stop))
    await asyncio.sleep(0.3)
    assert feed.requests == []
    r.settings["auto_update_enabled"] = True  # live: applies on the next tick
    for _ in range(300):
        if feed.requests:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert feed.requests, "enabled again: the loop checks"


async def test_the_interval_has_a_floor_and_the_first_check_waits_one_interval(
    layout: InstallLayout, feed: Feed
) -> None:
    r = rig(layout, feed, tick_s=0.01, min_interval_s=0.2)
    assert up.effective_interval(Settings(auto_update_interval_secs=0)) == 60
    assert up.effective_interval(Settings()) == 1800
    stop = asyncio.Event()
    loop = asyncio.create_task(r.updater.run(stop))
    await asyncio.sleep(0.1)
    assert feed.requests == []  # not at start
    for _ in range(300):
        if feed.requests:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert feed.requests


async def test_the_loop_installs_and_restarts(layout: InstallLayout, feed: Feed) -> None:
    feed.publish("2.0.0")
    r = rig(layout, feed, tick_s=0.01, min_interval_s=0.02)
    stop = asyncio.Event()
    loop = asyncio.create_task(r.updater.run(stop))
    for _ in range(500):
        if r.restarts:
            break
        await asyncio.sleep(0.01)
    await asyncio.wait_for(loop, 5)  # ends by itself: the process is being replaced
    assert r.restarts == [layout.root / "2.0.0" / "studio-worker"]
    again = await r.updater.update_now()
    assert (again.outcome, again.detail) == ("installed", "restart pending")
    assert r.restarts == [layout.root / "2.0.0" / "studio-worker"]


async def test_outside_an_installed_layout_self_update_is_off(
    feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    where = up.locate_install(Path(sys.executable))  # this test's venv
    assert isinstance(where, str)
    r = rig(where, feed, tick_s=0.01, min_interval_s=0)
    stop = asyncio.Event()
    await asyncio.wait_for(r.updater.run(stop), 5)  # returns at once
    result = await r.updater.update_now()
    assert result.outcome == "off"
    offs = [m for m in messages(caplog).splitlines() if "self-update is off for this install" in m]
    assert len(offs) == 1
    assert feed.requests == []


async def test_without_a_trusted_root_self_update_is_off(layout: InstallLayout, feed: Feed) -> None:
    (layout.root / "1.0.0" / up.ROOT_SEED).unlink()
    result = await rig(layout, feed).updater.check_now()
    assert result.outcome == "off" and "no trusted root" in result.detail
    assert feed.requests == []


async def test_the_windows_pointer_file_is_switched_atomically(tmp_path: Path, feed: Feed) -> None:
    root = tmp_path / "win"
    v1 = root / "1.0.0"
    v1.mkdir(parents=True)
    with tarfile.open(feed.target("1.0.0")) as tar:
        tar.extractall(v1)
    shutil.copy(feed.repo / "metadata" / "root.json", v1 / up.ROOT_SEED)
    (root / up.CURRENT_FILE).write_text("1.0.0\n")
    layout = up.locate_install(v1 / "studio-worker")
    assert isinstance(layout, InstallLayout) and layout.pointer == "file"
    feed.publish("2.0.0")
    assert (await rig(layout, feed).updater.update_now()).outcome == "installed"
    assert (root / up.CURRENT_FILE).read_text() == "2.0.0\n"
    assert not (root / "current").exists()


def test_the_reference_feed_means_our_update_repository() -> None:
    reference = "https://api.github.com/repos/webbertakken/studio-worker/releases"
    assert up.resolve_feed(reference) == up.DEFAULT_UPDATE_REPOSITORY
    assert up.resolve_feed("http://127.0.0.1:8000/repo") == "http://127.0.0.1:8000/repo/"


async def test_the_variant_follows_the_install(layout: InstallLayout, feed: Feed) -> None:
    """A CUDA install (`.variant` written by the installer) updates from the -cuda target
    and the new version keeps the mark."""
    if up.host_target() != TARGET:
        pytest.skip("the cuda target exists for x86_64 Linux")
    (layout.root / "1.0.0" / up.VARIANT_FILE).write_text("cuda\n")
    cuda = f"{TARGET}-cuda"
    tuf_repo.add_release(feed.workdir, make_release(feed.releases, "1.5.0"), target=cuda)
    feed.publish("2.0.0")  # cpu only
    updater = Updater(
        layout=layout,
        settings=lambda: Settings(auto_update_feed=feed.url, auto_update_interval_secs=0),
        gate=JobGate(),
        restart=lambda exe: None,
    )
    result = await updater.update_now()
    assert (result.outcome, result.latest) == ("installed", "1.5.0")
    assert (layout.root / "1.5.0" / up.VARIANT_FILE).read_text() == "cuda\n"


def test_host_target() -> None:
    assert up.host_target(system="Linux", machine="x86_64") == "x86_64-unknown-linux-gnu"
    assert up.host_target("cuda", system="Linux", machine="x86_64") == (
        "x86_64-unknown-linux-gnu-cuda"
    )
    assert up.host_target(system="Darwin", machine="arm64") == "aarch64-apple-darwin"
    assert up.host_target(system="Windows", machine="AMD64") == "x86_64-pc-windows-msvc"
    assert up.host_target(system="Plan9", machine="x86_64") is None


# ---------------------------------------------------------------------------------------
# Rollback


async def test_a_version_that_crashes_at_start_rolls_back_by_itself(
    layout: InstallLayout, feed: Feed, caplog: pytest.LogCaptureFixture
) -> None:
    # 1.0.0 -> 2.0.0, healthy.
    feed.publish("2.0.0")
    assert (await rig(layout, feed).updater.update_now()).outcome == "installed"
    assert run_exe(layout.root / "current" / "studio-worker").stdout.strip() == "running 2.0.0"
    v2 = up.locate_install(layout.root / "2.0.0" / "studio-worker")
    assert isinstance(v2, InstallLayout)
    up.mark_healthy(v2)  # what the daemon does; also prunes: 1.0.0 kept as previous
    assert (layout.root / "1.0.0").exists()

    # 2.0.0 -> 3.0.0, which crashes before it is healthy.
    feed.publish("3.0.0", crash=True)
    r = rig(v2, feed)
    assert (await r.updater.update_now()).outcome == "installed"
    exe = layout.root / "current" / "studio-worker"  # what the service starts each time
    outputs = [run_exe(exe) for _ in range(3)]
    assert [o.stdout.split()[0] for o in outputs] == ["crash", "crash", "rollback"]
    assert outputs[-1].returncode == 0
    # The rollback re-executed 2.0.0 in the same process: its line follows.
    assert outputs[-1].stdout.strip().splitlines()[-1] == "running 2.0.0"
    assert "not healthy after 2 starts" in outputs[-1].stdout
    assert layout.current() == "2.0.0"
    state = up.load_state(layout.state_path)
    assert state.bad == ("3.0.0",) and state.pending is None
    assert state.rollback is not None and state.rollback["to"] == "2.0.0"

    # 2.0.0 reports the rollback once (shipped to the studio), and never retries 3.0.0.
    shipped: list[tuple[str, str, str]] = []
    r2 = rig(v2, feed, report=lambda *a: shipped.append(a), tick_s=0.01, min_interval_s=0.02)
    stop = asyncio.Event()
    loop = asyncio.create_task(r2.updater.run(stop))
    for _ in range(300):
        if any("skipped" in m for _, _, m in shipped):
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(loop, 5)
    assert shipped[0] == (
        "error",
        "auto-update",
        "update 3.0.0 rolled back to 2.0.0: not healthy after 2 starts",
    )
    assert any("update 3.0.0 skipped: it was rolled back" in m for _, _, m in shipped)
    assert r2.restarts == [] and layout.current() == "2.0.0"
    assert up.load_state(layout.state_path).rollback["reported"] is True  # type: ignore[index]
    up.mark_healthy(v2)
    assert not (layout.root / "3.0.0").exists()  # the bad version's files are dropped


async def test_a_version_that_hangs_is_rolled_back_at_the_deadline(
    layout: InstallLayout, feed: Feed
) -> None:
    feed.publish("2.0.0")
    assert (await rig(layout, feed).updater.update_now()).outcome == "installed"
    v2 = up.locate_install(layout.root / "2.0.0" / "studio-worker")
    assert isinstance(v2, InstallLayout)
    decision = up.boot(v2, deadline_s=0.2)
    assert decision.action == "run" and decision.watch_until is not None
    r = rig(v2, feed, boot_decision=decision, tick_s=0.05)
    stop = asyncio.Event()
    await asyncio.wait_for(r.updater.run(stop), 5)  # never marked healthy: gives up
    assert r.restarts == [layout.root / "1.0.0" / "studio-worker"]
    assert layout.current() == "1.0.0"
    assert up.load_state(layout.state_path).bad == ("2.0.0",)


def test_boot_decisions() -> None:
    now = 1_000_000.0
    pending = Pending(version="2.0.0", previous="1.0.0", switched_at=now - 1)
    state = UpdateState(pending=pending)
    kw: dict[str, Any] = {"now": now, "deadline_s": 300, "max_starts": 3}

    assert up.decide_boot(UpdateState(), running="1.0.0", current="1.0.0", healthy=False, **kw)[
        1
    ] == BootDecision("run")
    # First start on trial: counted, watched.
    s1, d1 = up.decide_boot(state, running="2.0.0", current="2.0.0", healthy=False, **kw)
    assert d1 == BootDecision("run", watch_until=now - 1 + 300)
    assert s1.pending == Pending("2.0.0", "1.0.0", now - 1, starts=1)
    # Healthy: the trial ends, the old version is kept as `previous`.
    s2, d2 = up.decide_boot(s1, running="2.0.0", current="2.0.0", healthy=True, **kw)
    assert d2.action == "run" and s2.pending is None and s2.previous == "1.0.0"
    # Starts exhausted.
    s3 = UpdateState(pending=Pending("2.0.0", "1.0.0", now - 1, starts=3))
    s4, d4 = up.decide_boot(s3, running="2.0.0", current="2.0.0", healthy=False, **kw)
    assert d4.action == "rollback" and d4.version == "1.0.0"
    assert d4.reason == "not healthy after 3 starts"
    assert s4.bad == ("2.0.0",) and s4.pending is None
    # Past the deadline with an earlier failed start.
    late = UpdateState(pending=Pending("2.0.0", "1.0.0", now - 301, starts=1))
    _, d5 = up.decide_boot(late, running="2.0.0", current="2.0.0", healthy=False, **kw)
    assert d5.action == "rollback" and "within 300 s" in d5.reason
    # Past the deadline but never started yet (machine was off): one more chance.
    fresh = UpdateState(pending=Pending("2.0.0", "1.0.0", now - 301, starts=0))
    assert up.decide_boot(fresh, running="2.0.0", current="2.0.0", healthy=False, **kw)[
        1
    ].action == ("run")
    # A crash between the state write and the switch: the pending entry is stale.
    s6, d6 = up.decide_boot(state, running="1.0.0", current="1.0.0", healthy=True, **kw)
    assert d6.action == "run" and s6.pending is None


def test_the_state_file_survives_a_round_trip_and_corruption(tmp_path: Path) -> None:
    path = tmp_path / "state.json"
    state = UpdateState(
        pending=Pending("2.0.0", "1.0.0", 5.0, 1), bad=("0.9.0",), bad_reasons={"0.9.0": "x"}
    )
    up.save_state(path, state)
    assert up.load_state(path) == state
    path.write_text("{not json")
    assert up.load_state(path) == UpdateState()


# ---------------------------------------------------------------------------------------
# A crash mid-install


CRASHER = """
import sys, time, asyncio
sys.path.insert(0, {src!r})
from pathlib import Path
from studio_worker.config.settings import Settings
from studio_worker.jobs.gate import JobGate
from studio_worker.platform import updater as u

layout = u.locate_install(Path({exe!r}))

def staged(version, path):
    print("STAGED", version, path, flush=True)
    time.sleep(60)

upd = u.Updater(layout=layout, settings=lambda: Settings(auto_update_feed={url!r}),
                gate=JobGate(), restart=print, target={target!r}, on_staged=staged)
asyncio.run(upd.update_now())
"""


def test_a_crash_mid_install_leaves_the_old_version_intact(
    layout: InstallLayout, feed: Feed
) -> None:
    feed.publish("2.0.0")
    code = CRASHER.format(
        src=str(SRC),
        exe=str(layout.executable("1.0.0")),
        url=feed.url,
        target=TARGET,
    )
    child = subprocess.Popen(
        [sys.executable, "-c", code], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    try:
        line = child.stdout.readline()  # type: ignore[union-attr]
        assert line.startswith("STAGED 2.0.0"), line + child.stderr.read()  # type: ignore[union-attr]
        child.kill()  # SIGKILL: no cleanup of any kind
    finally:
        child.wait(10)
    assert layout.current() == "1.0.0"
    assert run_exe(layout.root / "current" / "studio-worker").stdout.strip() == "running 1.0.0"
    assert not (layout.root / "2.0.0").exists()
    assert layout.staging_dir("2.0.0").exists()  # the debris of the crash

    result = asyncio.run(rig(layout, feed).updater.update_now())
    assert result.outcome == "installed"
    assert not list(layout.root.glob(f"{up.STAGING_PREFIX}*"))
    assert layout.current() == "2.0.0"


# ---------------------------------------------------------------------------------------
# Without setuptools, as in the release binary

WITHOUT_SETUPTOOLS = """
import asyncio, importlib.abc, json, sys
sys.path.insert(0, {src!r})


class LeftOut(importlib.abc.MetaPathFinder):
    # what build/build.py's --nofollow-import-to=setuptools leaves the binary with
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ("setuptools", "_distutils_hack", "distutils"):
            raise ModuleNotFoundError(f"No module named {{name!r}}", name=name)
        return None


sys.meta_path.insert(0, LeftOut())
try:
    import tufup.client
    plain = "imported"
except ImportError as exc:
    plain = f"{{type(exc).__name__}}: {{exc}}"
from pathlib import Path
from studio_worker.config.settings import Settings
from studio_worker.jobs.gate import JobGate
from studio_worker.platform import updater as u

layout = u.locate_install(Path({exe!r}))
restarts = []
updater = u.Updater(
    layout=layout,
    settings=lambda: Settings(auto_update_feed={url!r}),
    gate=JobGate(),
    restart=restarts.append,
    target={target!r},
)
off = updater.why_off()
result = asyncio.run(updater.update_now())
print(json.dumps({{
    "plain": plain,
    "off": off,
    "result": result.to_json(),
    "restarts": [str(p) for p in restarts],
    "setuptools_left": sorted(m for m in sys.modules if m.split(".")[0] == "setuptools"),
}}))
"""


def test_without_setuptools_the_client_still_loads_and_installs(
    layout: InstallLayout, feed: Feed
) -> None:
    """The release binary leaves setuptools out; tufup's package imports
    `setuptools.config.expand` on its repository side. Every built worker said `self-update
    is off: tufup is not installed` (seen with the 0.5.0 core binary) until `tufup_client`."""
    feed.publish("2.0.0")
    code = WITHOUT_SETUPTOOLS.format(
        src=str(SRC), exe=str(layout.executable("1.0.0")), url=feed.url, target=TARGET
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    seen = json.loads(done.stdout.splitlines()[-1])
    assert seen["plain"] == "ModuleNotFoundError: No module named 'setuptools'"  # the condition
    assert seen["off"] is None
    assert seen["result"]["message"] == "update installed: 1.0.0 -> 2.0.0", seen
    assert seen["restarts"] == [str(layout.executable("2.0.0"))]
    assert seen["setuptools_left"] == []  # the stand-ins are gone again
    assert layout.current() == "2.0.0"


def test_why_off_names_an_import_failure_other_than_a_missing_tufup(
    layout: InstallLayout, feed: Feed, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise ModuleNotFoundError("No module named 'bsdiff4'", name="bsdiff4")

    monkeypatch.setattr(up, "tufup_client", broken)
    assert rig(layout, feed).updater.why_off() == (
        "self-update is off: tufup cannot be imported"
        " (ModuleNotFoundError: No module named 'bsdiff4')"
    )

    def missing() -> None:
        raise ModuleNotFoundError("No module named 'tufup'", name="tufup")

    monkeypatch.setattr(up, "tufup_client", missing)
    assert rig(layout, feed).updater.why_off() == (
        "self-update is off: tufup is not installed (the `update` extra)"
    )
