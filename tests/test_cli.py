from __future__ import annotations

import json
import os
import stat
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner, Result

from studio_worker import __version__
from studio_worker.cli import cli
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore

SECRET = "f00dfeed" * 8


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    return tmp_path / "cfg" / "config.toml"


def invoke(cfg: Path, *args: str) -> Result:
    return CliRunner().invoke(cli, ["--config", str(cfg), *args], catch_exceptions=False)


def table(cfg: Path) -> dict[str, Any]:
    return tomllib.loads(cfg.read_text())


def test_version() -> None:
    result = CliRunner().invoke(cli, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"studio-worker {__version__} (cpu)\n"


def test_every_command_has_help(cfg: Path) -> None:
    top = CliRunner().invoke(cli, ["--help"])
    assert top.exit_code == 0
    assert "--config" in top.output
    for name in (
        "run",
        "demo",
        "register",
        "status",
        "enable",
        "disable",
        "set-threshold",
        "config",
        "studio",
        "check-update",
        "update",
    ):
        assert name in top.output
        result = CliRunner().invoke(cli, [name, "--help"])
        assert result.exit_code == 0, name
        assert "Usage:" in result.output


def test_a_command_is_required() -> None:
    assert CliRunner().invoke(cli, []).exit_code != 0


def test_status_bootstraps_and_prints_lines(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(cfg.parent.parent))
    result = invoke(cfg, "status")
    assert result.exit_code == 0
    assert cfg.exists()
    lines = result.output.splitlines()
    # pytest does not run from an installed layout: self-update is off, and says why
    assert lines.pop(7).startswith("last_update_check: self-update is off for this install: ")
    assert lines == [
        f"config path: {cfg}",
        "api_base_url: https://studio.minis.gg/",
        "registration: not registered (will auto-register on next launch)",
        "vram_threshold_gb: 12",
        f"models_root: {cfg.parent.parent / 'models'}",
        "auto_update: true",
        "update_interval: 1800s",
        "claiming: enabled",
    ]


@pytest.mark.parametrize(
    ("creds", "line", "reg"),
    [
        (
            {"worker_id": "w-1", "auth_token": SECRET},
            "registration: approved as w-1",
            {"state": "approved", "worker_id": "w-1"},
        ),
        (
            {"registration_request_id": "rr-4", "registration_secret": SECRET},
            "registration: pending operator approval (request rr-4)",
            {"state": "pending", "request_id": "rr-4"},
        ),
    ],
)
def test_status_registration_states(
    cfg: Path, creds: dict[str, str], line: str, reg: dict[str, str]
) -> None:
    ConfigStore(cfg).save(Settings(**creds))
    result = invoke(cfg, "status")
    assert line in result.output.splitlines()
    assert SECRET not in result.output
    as_json = json.loads(invoke(cfg, "status", "--json").output)
    assert as_json["registration"] == reg
    assert SECRET not in json.dumps(as_json)


def test_status_json(cfg: Path) -> None:
    ConfigStore(cfg).save(Settings(paused=True, vram_threshold_gb=7.5, models_root=Path("/m")))
    data = json.loads(invoke(cfg, "status", "--json").output)
    update = data.pop("update")
    assert update["lastCheck"] is None
    assert update["whyOff"].startswith("self-update is off for this install: ")
    assert data == {
        "config_path": str(cfg),
        "api_base_url": "https://studio.minis.gg/",
        "registration": {"state": "pristine"},
        "vram_threshold_gb": 7.5,
        "models_root": "/m",
        "auto_update": True,
        "update_interval_secs": 1800,
        "claiming": "paused",
    }


def test_enable_disable(cfg: Path) -> None:
    ConfigStore(cfg).save(Settings(worker_id="w-1", auth_token=SECRET))
    result = invoke(cfg, "disable")
    assert result.exit_code == 0
    assert result.output == (
        "claiming paused: the worker rejects new offers until `studio-worker enable`\n"
    )
    assert table(cfg)["paused"] is True
    assert table(cfg)["auth_token"] == SECRET  # the rest is kept
    assert "claiming: paused" in invoke(cfg, "status").output
    result = invoke(cfg, "enable")
    assert result.output == "claiming enabled\n"
    assert table(cfg)["paused"] is False


def test_set_threshold(cfg: Path) -> None:
    result = invoke(cfg, "set-threshold", "8")
    assert result.exit_code == 0
    assert result.output == "vram_threshold_gb = 8\n"
    assert table(cfg)["vram_threshold_gb"] == 8.0
    assert invoke(cfg, "set-threshold", "6.5").output == "vram_threshold_gb = 6.5\n"


@pytest.mark.parametrize("value", ["-1", "-0.5", "nan", "inf"])
def test_set_threshold_rejects_negative(cfg: Path, value: str) -> None:
    ConfigStore(cfg).save(Settings(vram_threshold_gb=9))
    result = CliRunner().invoke(cli, ["--config", str(cfg), "set-threshold", value])
    assert result.exit_code == 1
    assert result.stderr == "error: threshold must be >= 0\n"
    assert table(cfg)["vram_threshold_gb"] == 9.0


def test_register_reset(cfg: Path) -> None:
    ConfigStore(cfg).save(
        Settings(
            worker_id="w-1",
            auth_token=SECRET,
            install_id="i-1",
            registration_request_id="rr-1",
            registration_secret=SECRET,
            vram_threshold_gb=5,
        )
    )
    result = invoke(cfg, "register", "--reset")
    assert result.exit_code == 0
    assert result.output == (
        "local registration state cleared; run `studio-worker run` or `studio-worker ui` "
        "to auto-register\n"
    )
    saved = table(cfg)
    for key in (
        "worker_id",
        "auth_token",
        "install_id",
        "registration_request_id",
        "registration_secret",
    ):
        assert key not in saved
    assert saved["vram_threshold_gb"] == 5.0


def test_register_sets_url(cfg: Path) -> None:
    result = invoke(cfg, "register", "--api-base-url", "http://localhost:9790")
    assert result.exit_code == 0
    assert result.output == (
        "saved; run `studio-worker run` or `studio-worker ui` to auto-register against "
        "http://localhost:9790\n"
    )
    assert table(cfg)["api_base_url"] == "http://localhost:9790"


def test_register_refuses_a_bad_url(cfg: Path) -> None:
    result = CliRunner().invoke(cli, ["--config", str(cfg), "register", "--api-base-url", "nope"])
    assert result.exit_code == 1
    assert result.stderr.startswith('error: invalid api_base_url "nope"')
    assert "Traceback" not in result.output


def test_config_redacts_secrets(cfg: Path) -> None:
    ConfigStore(cfg).save(Settings(worker_id="w-1", auth_token=SECRET, local_api_token="a" * 64))
    result = invoke(cfg, "config")
    lines = result.output.splitlines()
    assert lines[0] == f"# {cfg}"
    body = tomllib.loads("\n".join(lines[1:]))
    assert body["auth_token"] == "<redacted>"
    assert body["local_api_token"] == "<redacted>"
    assert body["worker_id"] == "w-1"
    assert SECRET not in result.output
    shown = invoke(cfg, "config", "--show-secrets").output
    assert tomllib.loads(shown.split("\n", 1)[1])["auth_token"] == SECRET


REFERENCE = f"""\
api_base_url = "https://studio.example/"
vram_threshold_gb = 10.0
start_minimised = true
auto_update_enabled = false
auto_update_interval_secs = 3600
auto_update_feed = "https://api.github.com/repos/webbertakken/studio-worker/releases"
auto_update_prerelease = false
models_root = "~/models"
worker_id = "w-ref"
auth_token = "{SECRET}"
install_id = "00112233-4455-6677-8899-aabbccddeeff"
engine = "sd-cpp"
label = "old label"
bootstrap_token = "bt-legacy-token"
"""


def test_reference_config_is_compatible(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = cfg.parent.parent / "home"
    monkeypatch.setenv("HOME", str(home))
    cfg.parent.mkdir(parents=True)
    cfg.write_text(REFERENCE)
    out = invoke(cfg, "status").output.splitlines()
    assert "registration: approved as w-ref" in out
    assert "vram_threshold_gb: 10" in out
    assert f"models_root: {home / 'models'}" in out  # ~ expanded
    assert "auto_update: false" in out
    assert "update_interval: 3600s" in out
    invoke(cfg, "disable")  # a save
    saved = table(cfg)
    for legacy in ("engine", "label", "bootstrap_token"):
        assert legacy not in saved
    assert saved["auth_token"] == SECRET
    assert saved["install_id"] == "00112233-4455-6677-8899-aabbccddeeff"
    assert saved["auto_update_interval_secs"] == 3600
    assert saved["models_root"] == str(home / "models")
    assert not (Path.cwd() / "~").exists()


def test_invalid_toml_is_one_line_without_the_secret(cfg: Path) -> None:
    cfg.parent.mkdir(parents=True)
    cfg.write_text(f'auth_token = "{SECRET}\nworker_id = [\n')
    result = CliRunner().invoke(cli, ["--config", str(cfg), "status"])
    assert result.exit_code == 1
    assert result.stderr == (
        "error: parsing config.toml: the file is not valid TOML; fix or delete it\n"
    )
    assert SECRET not in result.output
    assert "Traceback" not in result.output


@pytest.mark.skipif(sys.platform == "win32", reason="Unix file modes")
def test_saved_config_is_0600(cfg: Path) -> None:
    invoke(cfg, "set-threshold", "4")
    assert stat.S_IMODE(cfg.stat().st_mode) == 0o600


def test_failed_save_keeps_old_file_and_reports(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    ConfigStore(cfg).save(Settings(vram_threshold_gb=3))
    before = cfg.read_bytes()

    def refuse(src: object, dst: object) -> None:
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(os, "replace", refuse)
    result = CliRunner().invoke(cli, ["--config", str(cfg), "set-threshold", "9"])
    assert result.exit_code == 1
    assert result.stderr == f"error: writing {cfg}: Permission denied\n"
    assert cfg.read_bytes() == before
    assert sorted(p.name for p in cfg.parent.iterdir()) == ["config.toml"]


def test_run_delegates_to_the_daemon(cfg: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import studio_worker.app as app

    seen: list[Path] = []

    def fake(config_path: Path) -> int:
        seen.append(config_path)
        return 3

    monkeypatch.setattr(app, "run_daemon", fake)
    result = invoke(cfg, "run")
    assert result.exit_code == 3
    assert seen == [cfg]


def test_demo_delegates(cfg: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import studio_worker.demo as demo

    seen: list[tuple[Path | None, bool]] = []

    def fake(output_dir: Path | None, keep: bool) -> int:
        seen.append((output_dir, keep))
        return 0

    monkeypatch.setattr(demo, "run_demo", fake)
    assert invoke(cfg, "demo").exit_code == 0
    assert invoke(cfg, "demo", "--output", str(tmp_path / "o"), "--keep").exit_code == 0
    assert seen == [(None, False), (tmp_path / "o", True)]


def test_removed_reference_options_fail_to_parse(cfg: Path) -> None:
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(cfg), "register", "--label", "x"]).exit_code == 2
