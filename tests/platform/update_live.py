"""A live self-update rig (tests/platform/test_update_live.py, bench/update.py).

Everything is real except the release binaries: the self-hosted studio in its own
process, an update repository made by build/tuf_repo.py and served over loopback HTTP,
an install root laid out as the installers do (`<root>/<version>/studio-worker`,
`current -> <version>`, `update-root.json` beside each executable), and the worker
daemon started from `<root>/current/studio-worker` by a small supervisor that restarts it
when it exits with an error, as the systemd unit / launchd agent / scheduled task do.

Each release's `studio-worker` is a launcher script (the Nuitka build takes 20 minutes)
that runs this checkout's package as that version: it sets `studio_worker.__version__`
before anything else imports it, so `--version`, the hello's `agentVersion` and the
update client all see the release's version. A release made with `crash=True` raises at
start, after the rollback check and before it can become healthy. Image jobs whose prompt
is `hold:<path>` run until that file exists (a job that lasts as long as a test needs).
"""

from __future__ import annotations

import contextlib
import http.server
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import httpx

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
for extra in (ROOT / "build", ROOT / "tests" / "e2e"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import tuf_repo  # noqa: E402
from processes import StudioProcess  # noqa: E402

from studio_worker.platform import updater as up  # noqa: E402

T = TypeVar("T")
TARGET = up.host_target("cpu") or "x86_64-unknown-linux-gnu"
HOLD_PREFIX = "hold:"
HOLD_LIMIT_S = 120.0

LAUNCHER = """#!{python}
# studio-worker {version}: this checkout's package, reporting itself as {version}.
import sys
sys.path.insert(0, {src!r})
import studio_worker
studio_worker.__version__ = {version!r}

import os, time
from studio_worker.engines import synthetic

_run = synthetic.SyntheticEngine.run

def run(self, claim, model_paths, progress, cancel):
    prompt = getattr(claim.task, "prompt", "") or ""
    if prompt.startswith({hold!r}):
        deadline = time.monotonic() + {hold_limit!r}
        while not os.path.exists(prompt[len({hold!r}):]) and time.monotonic() < deadline:
            time.sleep(0.02)
    return _run(self, claim, model_paths, progress, cancel)

synthetic.SyntheticEngine.run = run
if {crash!r}:
    from studio_worker import app

    async def broken(self, settings):
        raise RuntimeError("release {version} is broken: it crashes at start")

    app.Daemon._serve = broken
if __name__ == "__main__":  # not in the engines' spawned children
    from studio_worker.cli import main

    main()
"""

BLOB = random.Random(11).randbytes(32 * 1024)  # a "library" every release ships


def wait_for(probe: Callable[[], T | None], timeout: float = 30.0, what: str = "it") -> T:
    """Bounded wait for another process to reach a state we can only observe."""
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def make_release(out: Path, version: str, *, crash: bool = False) -> Path:
    """`studio-worker-<v>-<target>.tar.gz` with one top-level folder, as build/build.py."""
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"studio-worker-{version}-{TARGET}.tar.gz"
    script = LAUNCHER.format(
        python=sys.executable,
        src=str(SRC),
        version=version,
        crash=crash,
        hold=HOLD_PREFIX,
        hold_limit=HOLD_LIMIT_S,
    )
    top = f"studio-worker-{version}"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data, mode in (
            ("studio-worker", script.encode(), 0o755),
            ("lib/libengine.so", BLOB + version.encode(), 0o644),
        ):
            info = tarfile.TarInfo(f"{top}/{name}")
            info.size, info.mode, info.mtime = len(data), mode, 1_700_000_000
            tar.addfile(info, io.BytesIO(data))
    return archive


@contextlib.contextmanager
def repack_once(cache: Path) -> Iterator[None]:
    """`tuf_repo.py add` repacks the build into its TUF target; for a real build that is
    tens of seconds of gzip. The repack is reproducible (entries sorted, owners cleared,
    gzip time zeroed: the same archive gives the same bytes), so while this is active each
    source archive is repacked once and later adds of it copy those bytes."""
    original = tuf_repo._repack
    done: dict[tuple[str, int, int], Path] = {}

    def repack(archive: Path, dst: Path) -> None:
        stat = Path(archive).stat()
        key = (str(Path(archive).resolve()), stat.st_size, stat.st_mtime_ns)
        if key not in done:
            original(archive, dst)
            cache.mkdir(parents=True, exist_ok=True)
            done[key] = cache / f"{len(done)}-{Path(archive).name}"
            shutil.copyfile(dst, done[key])
        else:
            shutil.copyfile(done[key], dst)

    tuf_repo._repack = repack
    try:
        yield
    finally:
        tuf_repo._repack = original


class _Handler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def translate_path(self, path: str) -> str:
        self.directory = str(self.server.root)  # type: ignore[attr-defined]
        return super().translate_path(path)


class Feed:
    """The update repository (build/tuf_repo.py) on a loopback HTTP server.

    With `build` (a release archive build/build.py made), every version published is that
    archive, signed as the given version (`tuf_repo.py add --version`), without a patch;
    else each is a launcher release (`make_release`).
    """

    def __init__(self, base: Path, build: Path | None = None) -> None:
        self.workdir = base / "publish"
        self.releases = base / "releases"
        self.build = build
        tuf_repo.init_repository(self.workdir, root_key_dir=base / "offline-root")
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        self.server.root = self.repo  # type: ignore[attr-defined]
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_port}/"

    @property
    def repo(self) -> Path:
        return Path(self.workdir / tuf_repo.REPO_DIR)

    def publish(self, version: str, *, crash: bool = False) -> None:
        if self.build is not None:
            assert not crash, "a built release cannot be made to crash"
            tuf_repo.add_release(
                self.workdir, self.build, version=version, target=TARGET, patch=False
            )
            return
        tuf_repo.add_release(self.workdir, make_release(self.releases, version, crash=crash))

    def target(self, version: str) -> Path:
        return self.repo / "targets" / str(tuf_repo.target_filename(TARGET, version))

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class ConnectionWatch:
    """Polls the studio's view of one worker and keeps each change of `connected`: the
    only way to see a reconnection when the old and the new process report the same
    `agentVersion` (a built binary installed under another version)."""

    def __init__(self, view: Callable[[], dict[str, Any] | None], every: float = 0.005) -> None:
        self.changes: list[tuple[float, bool]] = []
        self._view, self._every = view, every
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        last: bool | None = None
        while not self._stop.is_set():
            with contextlib.suppress(httpx.HTTPError):
                connected = bool((self._view() or {}).get("connected"))
                if connected != last:
                    self.changes.append((time.monotonic(), connected))
                    last = connected
            self._stop.wait(self._every)

    def reconnected_after(self, since: float) -> float | None:
        """When the worker was connected again after a disconnection seen after `since`."""
        dropped = False
        for at, connected in list(self.changes):
            if at < since:
                continue
            if not connected:
                dropped = True
            elif dropped:
                return at
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(5)


class Service:
    """Runs `<root>/current/studio-worker run` and starts it again after an error exit
    (what `Restart=on-failure` does); a clean exit ends it."""

    def __init__(self, exe: Path, config: Path, log_path: Path, *, max_starts: int = 8) -> None:
        self.exe, self.config, self.log_path = exe, config, log_path
        self.max_starts = max_starts
        self.starts: list[float] = []
        self.exits: list[int] = []
        self.proc: subprocess.Popen[bytes] | None = None
        self._stopping = threading.Event()
        self._log = open(log_path, "ab")  # noqa: SIM115 - closed in stop()
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        env = {**os.environ, "STUDIO_WORKER_REGISTRATION_POLL_SECS": "0.2"}
        env["PYTHONUNBUFFERED"] = "1"
        while not self._stopping.is_set() and len(self.starts) < self.max_starts:
            self.starts.append(time.monotonic())
            self.proc = subprocess.Popen(
                [str(self.exe), "--config", str(self.config), "run"],
                stdout=self._log,
                stderr=subprocess.STDOUT,
                env=env,
            )
            code = self.proc.wait()
            self.exits.append(code)
            if code == 0:
                return

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self._stopping.set()
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        self._thread.join(20)
        self._log.close()


class LiveRig:
    """Studio + feed + install root + supervised worker, in `base`."""

    def __init__(self, base: Path, *, installed: str = "1.0.0", build: Path | None = None) -> None:
        self.base = base
        self.studio = StudioProcess(base / "studio")
        self.feed = Feed(base, build)
        self.root = base / "install"
        self.config = base / "worker" / "config.toml"
        self.service: Service | None = None
        self.worker_id: str | None = None
        self.feed.publish(installed)
        self._install(installed)
        self.config.parent.mkdir(parents=True, exist_ok=True)
        self.config.write_text(
            f'api_base_url = "{self.studio.url}"\n'
            f'models_root = "{base / "models"}"\n'
            f'auto_update_feed = "{self.feed.url}"\n'
            # no automatic check during a test: the local API triggers each one
            "auto_update_interval_secs = 86400\n"
            "local_api_port = 0\n",
            encoding="utf-8",
        )

    def _install(self, version: str) -> None:
        """What the installer does: unpack, seed the trusted root, point `current`."""
        vdir = self.root / version
        vdir.mkdir(parents=True)
        with tarfile.open(self.feed.target(version)) as tar:
            tar.extractall(vdir, filter="data")
        (vdir / up.ROOT_SEED).write_bytes((self.feed.repo / "metadata" / "root.json").read_bytes())
        os.symlink(version, self.root / up.CURRENT_LINK)

    @property
    def exe(self) -> Path:
        return self.root / up.CURRENT_LINK / up.EXE_NAME

    def current(self) -> str | None:
        return up.read_current(self.root)

    def start(self) -> Service:
        self.service = Service(self.exe, self.config, self.base / "worker.log")
        return self.service

    def approve(self, timeout: float = 60.0) -> str:
        """Approve the worker's registration request; returns its worker id."""
        pending = wait_for(
            lambda: self.studio.get("/admin/requests?status=pending"),
            timeout,
            "the worker's registration request",
        )
        approved = self.studio.post(f"/admin/requests/{pending[0]['requestId']}/approve")
        self.worker_id = str(approved["workerId"])
        return self.worker_id

    def studio_view(self) -> dict[str, Any] | None:
        for worker in self.studio.get("/admin/workers"):
            if worker["workerId"] == self.worker_id:
                return dict(worker)
        return None

    def connected_as(self, version: str) -> dict[str, Any] | None:
        view = self.studio_view()
        if view and view["connected"] and view["capabilities"].get("agentVersion") == version:
            return view
        return None

    def wait_connected(self, version: str, timeout: float = 60.0) -> dict[str, Any]:
        return wait_for(
            lambda: self.connected_as(version), timeout, f"the studio to see {version} connected"
        )

    def local_api(self) -> tuple[str, str]:
        found = json.loads((self.config.parent / "local-api.json").read_text())
        return found["url"], found["token"]

    def daemon_post(
        self, path: str, body: dict[str, Any] | None = None, timeout: float = 60.0
    ) -> httpx.Response:
        url, token = wait_for(self._discovery, 30, "the local API discovery file")
        auth = {"Authorization": f"Bearer {token}"}
        return httpx.post(url + path, json=body or {}, headers=auth, timeout=timeout)

    def _discovery(self) -> tuple[str, str] | None:
        try:
            return self.local_api()
        except (OSError, ValueError, KeyError):
            return None

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`<root>/current/studio-worker --config … <args>`, as an operator would run it."""
        return subprocess.run(
            [str(self.exe), "--config", str(self.config), *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )

    def studio_logs(self) -> list[dict[str, Any]]:
        assert self.worker_id is not None
        return list(self.studio.get(f"/admin/workers/{self.worker_id}/logs"))

    def close(self) -> None:
        if self.service is not None:
            self.service.stop()
        self.feed.close()
        self.studio.stop()
