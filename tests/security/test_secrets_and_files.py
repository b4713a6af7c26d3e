"""Security review (issue 8, item 5): secrets never in logs nor in `config` output by
default, config and discovery files 0600, the local API only on loopback, and update
archives that try to leave their folder."""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import shutil
import socket
import stat
import subprocess
import sys
import tarfile
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from studio_worker.app import Daemon, DaemonTuning
from studio_worker.cli import cli as cli_main
from studio_worker.config.redact import SecretRedactor
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.platform import updater
from studio_worker.session.attempt import Timing
from studio_worker.studio.server import StudioServer

POSIX = pytest.mark.skipif(sys.platform == "win32", reason="POSIX file modes")


def _non_loopback_ipv4() -> str | None:
    candidates: list[str] = []
    with contextlib.suppress(OSError):
        candidates.append(socket.gethostbyname(socket.gethostname()))
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(
            ["ip", "-4", "-o", "addr"], capture_output=True, text=True, timeout=5, check=False
        ).stdout
        candidates += [part.split("/")[0] for part in out.split() if "/" in part and "." in part]
    for address in candidates:
        if not address.startswith("127."):
            return address
    return None


class _RawRecords(logging.Handler):
    """Every record of our own loggers as emitted: message, exception and extra fields."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.name.startswith("studio_worker"):
            exc = logging.Formatter().formatException(record.exc_info) if record.exc_info else ""
            self.lines.append(f"{record.getMessage()} {exc} {vars(record)}")


async def test_a_real_daemon_never_logs_its_secrets_and_keeps_its_files_private(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # As `setup_logging` does: the daemon's redactor on the handler that formats lines.
    redactor = SecretRedactor()
    caplog.handler.addFilter(redactor)
    raw = _RawRecords()  # what our own code puts in records, before any filter runs
    logging.getLogger().handlers.insert(0, raw)
    studio = StudioServer(tmp_path / "studio")
    base_url = await studio.start()
    config = tmp_path / "worker" / "config.toml"
    ConfigStore(config).save(
        Settings(
            api_base_url=base_url,
            models_root=tmp_path / "models",
            auto_update_enabled=False,
            local_api_port=0,
        )
    )
    daemon = Daemon(
        config,
        redactor=redactor,
        tuning=DaemonTuning(registration_tick_s=0.2, timing=Timing(heartbeat_s=0.5)),
    )
    worker = asyncio.create_task(daemon.run())
    discovery = config.parent / "local-api.json"
    try:
        async with asyncio.timeout(30):
            while not studio.pending_requests():
                await asyncio.sleep(0.05)
            while not discovery.exists():
                await asyncio.sleep(0.05)
        studio.approve(studio.pending_requests()[0].id)
        async with asyncio.timeout(30):
            while daemon.status.snapshot().session_state.value != "connected":
                await asyncio.sleep(0.05)
        job = studio.submit_job("llm", {"messages": [{"role": "user", "content": "hi"}]})
        async with asyncio.timeout(30):
            while True:
                record = studio.get_job(job)
                if record is not None and record.terminal:
                    break
                await asyncio.sleep(0.05)

        # the local API answers on loopback only
        url = json.loads(discovery.read_text())["url"]
        port = int(url.rsplit(":", 1)[1])
        other = _non_loopback_ipv4()
        if other is not None:
            with pytest.raises(OSError), socket.create_connection((other, port), timeout=2):
                pass

        settings = tomllib.loads(config.read_text())
        secrets = {
            "auth_token": settings["auth_token"],
            "registration_secret": settings.get("registration_secret"),
            "local_api_token": json.loads(discovery.read_text())["token"],
        }
        if sys.platform != "win32":
            for path in (config, discovery):
                assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        worker_id = settings["worker_id"]
        await asyncio.sleep(1.5)  # one log flush to the studio
        shipped = json.dumps([e.model_dump(mode="json") for e in studio.worker_logs(worker_id)])
    finally:
        daemon.stop.set()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(worker, 20)
        await studio.stop()
        logging.getLogger().removeHandler(raw)

    handler_text = caplog.text
    records = "\n".join(raw.lines)
    assert caplog.records and shipped != "[]"
    for name, secret in secrets.items():
        if not secret:
            continue
        assert secret not in shipped, f"{name} in the logs shipped to the studio"
        assert secret not in records, f"{name} in a studio_worker log record (message or extra)"
    # Formatted lines (every logger at DEBUG, third-party ones included) pass the daemon's
    # redactor, which must know every secret by now.
    unknown = [n for n, s in secrets.items() if s and redactor.scrub(s) == s]
    assert not unknown, f"the daemon's SecretRedactor does not know {unknown}"
    for name, secret in secrets.items():
        assert not secret or secret not in handler_text, f"{name} in a formatted log line"
    if other is None:
        pytest.skip("no non-loopback IPv4 address on this machine: loopback-only not probed")


@POSIX
def test_config_output_redacts_secrets_by_default(tmp_path: Path) -> None:
    config = tmp_path / "config.toml"
    secrets = {
        "auth_token": "at_" + "a1" * 20,
        "registration_secret": "rs_" + "b2" * 20,
        "local_api_token": "la_" + "c3" * 20,
    }
    ConfigStore(config).save(Settings(worker_id="w_1", **secrets))
    assert stat.S_IMODE(config.stat().st_mode) == 0o600
    shown = CliRunner().invoke(cli_main, ["--config", str(config), "config"])
    assert shown.exit_code == 0, shown.output
    assert "w_1" in shown.output
    for secret in secrets.values():
        assert secret not in shown.output
    revealed = CliRunner().invoke(cli_main, ["--config", str(config), "config", "--show-secrets"])
    assert all(secret in revealed.output for secret in secrets.values())


# ---- update archives --------------------------------------------------------------
# platform/updater.py leaves extraction to tufup, which calls
# `shutil.unpack_archive(archive, extract_dir)` with no `filter`: on Python < 3.14 that is
# tarfile's "fully_trusted" extraction. The archive is TUF-verified first, so only a
# holder of the release keys can ship one, but nothing refuses entries that leave the
# staging folder once it is.


def _hostile_tar(path: Path, kind: str, outside: Path) -> None:
    with tarfile.open(path, "w:gz") as tar:
        info = tarfile.TarInfo("studio-worker-2.0.0/studio-worker")
        info.size = 2
        tar.addfile(info, io.BytesIO(b"ok"))
        if kind == "dotdot":
            info = tarfile.TarInfo(f"../{outside.name}")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind == "absolute":
            info = tarfile.TarInfo(str(outside))
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))
        elif kind == "symlink":
            link = tarfile.TarInfo("studio-worker-2.0.0/escape")
            link.type, link.linkname = tarfile.SYMTYPE, str(outside.parent)
            tar.addfile(link)
            info = tarfile.TarInfo(f"studio-worker-2.0.0/escape/{outside.name}")
            info.size = 4
            tar.addfile(info, io.BytesIO(b"evil"))


@POSIX
@pytest.mark.parametrize("kind", ["dotdot", "absolute", "symlink"])
def test_update_archive_entries_cannot_escape_the_staging_folder(tmp_path: Path, kind: str) -> None:
    outside = tmp_path / "outside" / f"pwned-{kind}"
    outside.parent.mkdir()
    staging = tmp_path / "root" / ".staging-2.0.0"
    staging.mkdir(parents=True)
    archive = tmp_path / "release.tar.gz"
    _hostile_tar(archive, kind, outside if kind != "dotdot" else tmp_path / "root" / "pwned")
    # the updater makes the data filter the default, then tufup's own call, exactly as
    # tufup.client.Client._apply_updates makes it with `extract_dir`, must refuse
    updater.harden_archive_extraction()
    with contextlib.suppress(Exception):
        shutil.unpack_archive(filename=archive, extract_dir=staging)
    escaped = [outside, tmp_path / "root" / "pwned"]
    assert not any(p.exists() for p in escaped), [p for p in escaped if p.exists()]
