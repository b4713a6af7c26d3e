"""`studio-worker install-service` / `uninstall-service` with a fake host and runner."""

from __future__ import annotations

import plistlib
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from studio_worker import services_cli
from studio_worker.cli import cli
from studio_worker.platform.services import LAUNCHD_LABEL, ServiceHost


class Recorder:
    def __init__(self, failing: Sequence[str] = ()) -> None:
        self.calls: list[tuple[str, ...]] = []
        self.failing = tuple(failing)

    def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
        self.calls.append(tuple(argv))
        if tuple(argv[: len(self.failing)]) == self.failing and self.failing:
            return 1, "Failed to connect to bus: No medium found\n"
        if tuple(argv[:2]) == ("schtasks", "/Query"):
            return 1, "ERROR: The system cannot find the file specified.\n"
        return 0, ""


@pytest.fixture
def home(tmp_path: Path) -> Path:
    return tmp_path / "home"


def use(
    monkeypatch: pytest.MonkeyPatch, home: Path, platform: str, recorder: Recorder, **env: str
) -> None:
    host = ServiceHost(platform=platform, home=home, env={"USER": "ana", **env}, uid=501)
    monkeypatch.setattr(services_cli, "_host", lambda: host)
    monkeypatch.setattr(services_cli, "_runner", lambda: recorder)


def invoke(config: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(config), *args], catch_exceptions=False)


def test_install_and_uninstall_systemd(
    monkeypatch: pytest.MonkeyPatch, home: Path, tmp_path: Path
) -> None:
    recorder = Recorder()
    use(monkeypatch, home, "linux", recorder)
    exe = tmp_path / "bin" / "studio-worker"
    config = tmp_path / "cfg" / "config.toml"
    result = invoke(config, "install-service", "--exe", str(exe))
    assert result.exit_code == 0, result.output
    unit = home / ".config/systemd/user/studio-worker.service"
    assert f"ExecStart={exe} --config {config} run" in unit.read_text()
    assert recorder.calls == [
        ("systemctl", "--version"),
        ("systemctl", "--user", "daemon-reload"),
        ("systemctl", "--user", "enable", "studio-worker.service"),
        ("systemctl", "--user", "restart", "studio-worker.service"),
    ]
    assert "installed the systemd user service studio-worker.service" in result.output
    assert "loginctl enable-linger ana" in result.output
    assert "journalctl --user -u studio-worker" in result.output

    recorder.calls.clear()
    result = invoke(config, "uninstall-service")
    assert result.exit_code == 0, result.output
    assert not unit.exists()
    assert recorder.calls[0] == ("systemctl", "--user", "disable", "--now", "studio-worker.service")
    assert "removed the studio-worker service" in result.output

    result = invoke(config, "uninstall-service")
    assert result.exit_code == 0
    assert result.output == "no studio-worker service is installed\n"


def test_dry_run_changes_nothing(
    monkeypatch: pytest.MonkeyPatch, home: Path, tmp_path: Path
) -> None:
    recorder = Recorder()
    use(monkeypatch, home, "linux", recorder)
    result = invoke(tmp_path / "c.toml", "install-service", "--dry-run", "--exe", "/x/sw")
    assert result.exit_code == 0, result.output
    assert recorder.calls == []
    assert not (home / ".config").exists()
    lines = result.output.splitlines()
    assert lines[0] == f"would write {home}/.config/systemd/user/studio-worker.service:"
    assert f"    ExecStart=/x/sw --config {tmp_path}/c.toml run" in lines
    assert lines[-3:] == [
        "would run systemctl --user daemon-reload",
        "would run systemctl --user enable studio-worker.service",
        "would run systemctl --user restart studio-worker.service",
    ]


def test_default_executable_is_this_install(
    monkeypatch: pytest.MonkeyPatch, home: Path, tmp_path: Path
) -> None:
    recorder = Recorder()
    use(monkeypatch, home, "linux", recorder)
    result = invoke(tmp_path / "c.toml", "install-service", "--dry-run")
    assert result.exit_code == 0, result.output
    exec_line = next(line for line in result.output.splitlines() if "ExecStart=" in line)
    # from a venv: its console script (or `python -m studio_worker` in a bare source tree)
    assert "studio-worker --config" in exec_line or "-m studio_worker --config" in exec_line


def test_a_failing_service_manager_is_one_error_line(
    monkeypatch: pytest.MonkeyPatch, home: Path, tmp_path: Path
) -> None:
    use(monkeypatch, home, "linux", Recorder(failing=("systemctl", "--user", "daemon-reload")))
    result = CliRunner().invoke(
        cli, ["--config", str(tmp_path / "c.toml"), "install-service", "--exe", "/x/sw"]
    )
    assert result.exit_code == 1
    assert result.output.strip().splitlines() == [
        "error: `systemctl --user daemon-reload` exited with 1: "
        "Failed to connect to bus: No medium found"
    ]


def test_missing_systemctl_writes_nothing(
    monkeypatch: pytest.MonkeyPatch, home: Path, tmp_path: Path
) -> None:
    class NoSystemd(Recorder):
        def __call__(self, argv: Sequence[str]) -> tuple[int, str]:
            self.calls.append(tuple(argv))
            return 127, f"{argv[0]}: command not found"

    use(monkeypatch, home, "linux", NoSystemd())
    result = CliRunner().invoke(
        cli, ["--config", str(tmp_path / "c.toml"), "install-service", "--exe", "/x/sw"]
    )
    assert result.exit_code == 1
    assert "error: systemctl not found" in result.output
    assert not (home / ".config").exists()


def test_install_launchd(monkeypatch: pytest.MonkeyPatch, home: Path, tmp_path: Path) -> None:
    recorder = Recorder()
    use(monkeypatch, home, "darwin", recorder)
    result = invoke(tmp_path / "c.toml", "install-service", "--exe", "/Users/ana/.local/bin/sw")
    assert result.exit_code == 0, result.output
    plist_path = home / f"Library/LaunchAgents/{LAUNCHD_LABEL}.plist"
    plist = plistlib.loads(plist_path.read_bytes())
    assert plist["ProgramArguments"][0] == "/Users/ana/.local/bin/sw"
    assert ("launchctl", "bootstrap", "gui/501", str(plist_path)) in recorder.calls
    assert f"logs: {home}/Library/Logs/studio-worker/daemon.log" in result.output


def test_install_windows_task(monkeypatch: pytest.MonkeyPatch, home: Path, tmp_path: Path) -> None:
    recorder = Recorder()
    use(monkeypatch, home, "win32", recorder, USERNAME="ana", USERDOMAIN="PC")
    config = tmp_path / "cfg" / "config.toml"
    result = invoke(config, "install-service", "--exe", str(tmp_path / "studio-worker.exe"))
    assert result.exit_code == 0, result.output
    xml_file = config.parent / "studio-worker.task.xml"
    assert xml_file.read_bytes().startswith(b"\xff\xfe")
    assert recorder.calls[0] == ("schtasks", "/Query", "/TN", "MinisStudioWorker")
    assert ("schtasks", "/Create", "/TN", "studio-worker", "/XML", str(xml_file), "/F") in (
        recorder.calls
    )
    assert "installed the scheduled task studio-worker" in result.output
    # the dry run decodes the UTF-16 file for display
    result = invoke(config, "install-service", "--dry-run", "--exe", "C:/sw.exe")
    assert '<?xml version="1.0" encoding="UTF-16"?>' in result.output


def test_both_commands_are_listed() -> None:
    top = CliRunner().invoke(cli, ["--help"])
    assert "install-service" in top.output and "uninstall-service" in top.output
    for name in ("install-service", "uninstall-service"):
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0 and "--dry-run" in result.output
