"""The "run in tray on login" item: rendering per OS (validated), planning, syncing, CLI."""

from __future__ import annotations

import plistlib
import shutil
import subprocess
import tomllib
from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest
from click.testing import CliRunner

from studio_worker.cli import cli
from studio_worker.desktop import autostart
from studio_worker.platform import services

SPACED = PurePosixPath("/opt/My Apps/studio-worker")
CONFIG = PurePosixPath("/home/kim/.config/minis-studio-worker/config.toml")


def host(tmp_path: Path, platform: str, **env: str) -> services.ServiceHost:
    return services.ServiceHost(platform=platform, home=tmp_path / "home", env=env)


@pytest.mark.parametrize(
    ("word", "quoted"),
    [
        ("/usr/bin/studio-worker", "/usr/bin/studio-worker"),
        ("ui", "ui"),
        ("/opt/My Apps/sw", '"/opt/My Apps/sw"'),
        ("100%", "100%%"),
        ('a"b', '"a\\"b"'),
        ("$HOME", '"\\$HOME"'),
        ("a\\b", '"a\\\\b"'),
        ("", '""'),  # an empty argument stays an argument
    ],
)
def test_exec_quote(word: str, quoted: str) -> None:
    assert autostart.exec_quote(word) == quoted


def test_exec_quote_refuses_line_breaks() -> None:
    with pytest.raises(autostart.AutostartError, match="line break"):
        autostart.exec_quote("a\nb")


def test_desktop_entry_matches_the_reference_keys() -> None:
    text = autostart.desktop_entry(autostart.ui_argv(SPACED, CONFIG))
    lines = text.splitlines()
    assert lines[0] == "[Desktop Entry]"
    assert "Type=Application" in lines
    assert "Name=studio-worker" in lines
    assert "Terminal=false" in lines
    assert "X-GNOME-Autostart-enabled=true" in lines
    assert f'Exec="/opt/My Apps/studio-worker" --config {CONFIG} ui' in lines


@pytest.mark.parametrize(
    "exe",
    [
        PurePosixPath("/usr/local/bin/studio-worker"),
        SPACED,
        PurePosixPath('/weird/$dir/"q"/back\\slash/100%/studio-worker'),
    ],
)
def test_desktop_entry_validates(tmp_path: Path, exe: PurePosixPath) -> None:
    validator = shutil.which("desktop-file-validate")
    if validator is None:
        pytest.skip("desktop-file-validate is not installed (Debian: desktop-file-utils)")
    path = tmp_path / autostart.DESKTOP_FILE
    path.write_text(autostart.desktop_entry(autostart.ui_argv(exe, CONFIG)))
    done = subprocess.run([validator, str(path)], capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "error" not in (done.stdout + done.stderr).lower()


def test_launch_agent_plist() -> None:
    argv = autostart.ui_argv(SPACED, CONFIG, ("-m", "studio_worker"))
    plist = plistlib.loads(autostart.launch_agent_plist(argv))
    assert plist == {
        "Label": "gg.minis.studio-worker-ui",
        "ProgramArguments": [str(SPACED), "-m", "studio_worker", "--config", str(CONFIG), "ui"],
        "RunAtLoad": True,
        "ProcessType": "Interactive",
    }
    assert "KeepAlive" not in plist  # Quit in the tray means quit
    assert plist["Label"] not in (services.LAUNCHD_LABEL, services.LEGACY_LAUNCHD_LABEL)


def test_run_key_value() -> None:
    exe = PureWindowsPath(r"C:\Program Files\studio-worker\studio-worker.exe")
    cfg = PureWindowsPath(r"C:\Users\Kim Lee\AppData\Roaming\minis-studio-worker\config.toml")
    assert autostart.run_key_value(autostart.ui_argv(exe, None)) == f'"{exe}" ui'
    assert autostart.run_key_value(autostart.ui_argv(exe, cfg)) == f'"{exe}" --config "{cfg}" ui'
    with pytest.raises(autostart.AutostartError):
        autostart.run_key_value(['C:\\a"b.exe', "ui"])


def test_plans_per_os(tmp_path: Path) -> None:
    argv = ["/bin/sw", "ui"]
    xdg = tmp_path / "xdg"
    (write,) = autostart.plan(host(tmp_path, "linux", XDG_CONFIG_HOME=str(xdg)), argv)
    assert isinstance(write, services.WriteFile)
    assert write.path == xdg / "autostart" / "studio-worker-ui.desktop"
    (write,) = autostart.plan(host(tmp_path, "linux"), argv)
    assert isinstance(write, services.WriteFile)
    assert write.path == tmp_path / "home" / ".config" / "autostart" / "studio-worker-ui.desktop"
    (write,) = autostart.plan(host(tmp_path, "darwin"), argv)
    assert isinstance(write, services.WriteFile)
    assert write.path == (
        tmp_path / "home" / "Library" / "LaunchAgents" / "gg.minis.studio-worker-ui.plist"
    )
    assert plistlib.loads(write.data)["ProgramArguments"] == argv
    assert autostart.plan(host(tmp_path, "win32"), argv) == [
        autostart.SetRunValue("studio-worker-ui", '"/bin/sw" ui')
    ]
    assert autostart.plan(host(tmp_path, "win32"), None) == [
        autostart.DeleteRunValue("studio-worker-ui")
    ]
    (remove,) = autostart.plan(host(tmp_path, "darwin"), None)
    assert isinstance(remove, services.RemoveFile)


def test_sync_writes_once_then_removes(tmp_path: Path) -> None:
    linux = host(tmp_path, "linux")
    path = autostart.entry_path(linux)
    assert path is not None
    assert autostart.sync(linux, ["/bin/sw", "ui"]) is True
    assert "Exec=/bin/sw ui" in path.read_text()
    assert autostart.sync(linux, ["/bin/sw", "ui"]) is False  # already matches
    assert autostart.sync(linux, ["/bin/other", "ui"]) is True  # follows the executable
    assert "Exec=/bin/other ui" in path.read_text()
    assert autostart.sync(linux, None) is True
    assert not path.exists()
    assert autostart.sync(linux, None) is False


def test_cli_autostart_on_and_off(tmp_path: Path) -> None:
    home = tmp_path / "home"
    config = tmp_path / "cfg" / "config.toml"
    env = {"HOME": str(home), "XDG_CONFIG_HOME": str(home / ".config")}
    runner = CliRunner()
    entry = home / ".config" / "autostart" / "studio-worker-ui.desktop"

    on = runner.invoke(cli, ["--config", str(config), "ui", "--autostart", "on"], env=env)
    assert on.exit_code == 0, on.output
    assert "run in tray on login: on" in on.output
    assert tomllib.loads(config.read_text())["auto_start"] is True
    text = entry.read_text()
    assert f"--config {config} ui" in text

    off = runner.invoke(cli, ["--config", str(config), "ui", "--autostart", "off"], env=env)
    assert off.exit_code == 0, off.output
    assert "run in tray on login: off" in off.output
    assert tomllib.loads(config.read_text())["auto_start"] is False
    assert not entry.exists()


def test_cli_refuses_other_values(tmp_path: Path) -> None:
    done = CliRunner().invoke(
        cli, ["--config", str(tmp_path / "c.toml"), "ui", "--autostart", "maybe"]
    )
    assert done.exit_code == 2
