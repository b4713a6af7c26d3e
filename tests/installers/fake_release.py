"""A fake GitHub release on loopback for installers/install.sh, and how to run the installer.

The server (python's http.server in a thread, 127.0.0.1 only) serves a release laid out as
a mirror must be (`<base>/v<version>/<asset>`, `<asset>.sha256`, `<base>/latest`). Used by
the installer's own tests (fake archives) and by the built binary's proof (the real one).
"""

from __future__ import annotations

import contextlib
import hashlib
import http.server
import io
import os
import platform
import shutil
import subprocess
import sys
import tarfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

INSTALLER = Path(__file__).resolve().parents[2] / "installers" / "install.sh"


def host_triple() -> str:
    machine = platform.machine().lower()
    arch = {"x86_64": "x86_64", "amd64": "x86_64", "aarch64": "aarch64", "arm64": "aarch64"}.get(
        machine, machine
    )
    return f"{arch}-apple-darwin" if sys.platform == "darwin" else f"{arch}-unknown-linux-gnu"


FAKE_BINARY = """#!/bin/sh
case "$1" in
    --version) echo "studio-worker {version} ({variant})" ;;
    install-service|uninstall-service)
        echo "$1" >>"$HOME/service-calls.log"
        echo "fake $1 done" ;;
    *) echo "fake studio-worker: $*" ;;
esac
"""

BROKEN_BINARY = "#!/bin/sh\necho 'cannot execute: wrong architecture' >&2\nexit 126\n"


class QuietHandler(http.server.SimpleHTTPRequestHandler):
    requests_seen: list[str]

    def log_message(self, format: str, *args: object) -> None:
        self.requests_seen.append(self.path)


@dataclass
class Release:
    root: Path
    base: str
    requests: list[str] = field(default_factory=list)

    def publish(
        self,
        version: str,
        *,
        triple: str | None = None,
        variant: str = "cpu",
        binary: str | None = None,
        corrupt: bool = False,
        latest: bool = True,
    ) -> str:
        triple = triple or host_triple()
        suffix = "-cuda" if variant == "cuda" else ""
        folder = f"studio-worker-{version}-{triple}{suffix}"
        asset = f"{folder}.tar.gz"
        script = binary or FAKE_BINARY.format(version=version, variant=variant)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w:gz") as tar:
            for name, data, mode in [
                (f"{folder}/studio-worker", script.encode(), 0o755),
                (f"{folder}/libstudio_fake.so", b"\x7fELF not really", 0o644),
            ]:
                info = tarfile.TarInfo(name)
                info.size = len(data)
                info.mode = mode
                tar.addfile(info, io.BytesIO(data))
        data = buf.getvalue()
        digest = hashlib.sha256(data).hexdigest()
        if corrupt:
            data = data[:-1] + bytes([data[-1] ^ 1])
        tag_dir = self.root / f"v{version}"
        tag_dir.mkdir(parents=True, exist_ok=True)
        (tag_dir / asset).write_bytes(data)
        (tag_dir / f"{asset}.sha256").write_text(f"{digest}  {asset}\n")
        if latest:
            (self.root / "latest").write_text(f"v{version}\n")
        return asset

    def publish_archive(self, archive: Path, version: str, *, latest: bool = True) -> str:
        """Publishes a built archive (and its `.sha256`) as release `v<version>`."""
        tag_dir = self.root / f"v{version}"
        tag_dir.mkdir(parents=True, exist_ok=True)
        shutil.copy2(archive, tag_dir / archive.name)
        shutil.copy2(archive.with_name(archive.name + ".sha256"), tag_dir)
        if latest:
            (self.root / "latest").write_text(f"v{version}\n")
        return archive.name


@contextlib.contextmanager
def serve_release(root: Path) -> Iterator[Release]:
    """A mirror of the GitHub release layout, served from `root` on 127.0.0.1."""
    root.mkdir(parents=True, exist_ok=True)
    seen: list[str] = []
    handler = type("Handler", (QuietHandler,), {"requests_seen": seen})
    server = http.server.ThreadingHTTPServer(
        ("127.0.0.1", 0), partial(handler, directory=str(root))
    )
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield Release(root, f"http://127.0.0.1:{server.server_address[1]}", seen)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def run(
    home: Path,
    release: Release,
    *args: str,
    shell: str = "sh",
    path: str | None = None,
    **env: str,
) -> subprocess.CompletedProcess[str]:
    environ = {
        "HOME": str(home),
        "PATH": path if path is not None else os.environ.get("PATH", "/usr/bin:/bin"),
        "LC_ALL": "C",
        "STUDIO_WORKER_DOWNLOAD_BASE": release.base,
        "STUDIO_WORKER_VARIANT": "cpu",
        **env,
    }
    return subprocess.run(
        [shutil.which(shell) or shell, str(INSTALLER), *args],
        env=environ,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=120,
        start_new_session=True,  # no controlling terminal: never a prompt
        check=False,
    )


def link(home: Path) -> Path:
    return home / ".local/bin/studio-worker"


def versions_dir(home: Path) -> Path:
    return home / ".local/share/studio-worker"


def installed_versions(home: Path) -> list[str]:
    root = versions_dir(home)
    if not root.exists():
        return []
    return sorted(p.name for p in root.iterdir() if not p.is_symlink())


def version_of(home: Path) -> str:
    return subprocess.run(
        [str(link(home)), "--version"], capture_output=True, text=True, check=True
    ).stdout.strip()
