from __future__ import annotations

import logging
import os
import stat
import sys
import tomllib
from pathlib import Path

import pytest

from studio_worker.config.errors import ConfigError
from studio_worker.config.redact import SecretRedactor
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore

REFERENCE_FILE = """\
api_base_url = "https://studio.example/"
vram_threshold_gb = 8.0
start_minimised = false
auto_update_enabled = true
auto_update_interval_secs = 900
auto_update_feed = "https://api.github.com/repos/webbertakken/studio-worker/releases"
auto_update_prerelease = false
models_root = "/srv/models"
worker_id = "w-123"
auth_token = "tok-0123456789abcdef"
install_id = "0123abcd-0123-4567-89ab-0123456789ab"
local_api_token = "{lat}"
engine = "sd-cpp"
engines = ["sd-cpp", "llama"]
label = "my box"
bootstrap_token = "bt-legacy"
auto_enabled = true
gradio_endpoint_url = "http://localhost:7860"
supported_models_override = ["a"]
"""


def test_missing_file_bootstraps_defaults(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "nested" / "config.toml"
    store = ConfigStore(path)
    with caplog.at_level(logging.INFO):
        settings = store.load()
    assert settings == Settings()
    assert path.exists()
    assert "config file missing — bootstrapped defaults" in caplog.text
    assert tomllib.loads(path.read_text())["api_base_url"] == "https://studio.minis.gg/"


def test_bootstrap_uses_the_injected_defaults(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "c.toml", defaults=lambda: Settings(vram_threshold_gb=6.0))
    assert store.load().vram_threshold_gb == 6.0
    assert ConfigStore(tmp_path / "c.toml").load().vram_threshold_gb == 6.0


def test_reference_file_loads_and_save_drops_legacy_keys(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text(REFERENCE_FILE.format(lat="a" * 64))
    store = ConfigStore(path)
    settings = store.load()
    assert settings.api_base_url == "https://studio.example/"
    assert settings.vram_threshold_gb == 8.0
    assert settings.start_minimised is False
    assert settings.auto_update_interval_secs == 900
    assert settings.models_root == Path("/srv/models")
    assert settings.credentials().approved
    store.save(settings)
    table = tomllib.loads(path.read_text())
    for legacy in (
        "engine",
        "engines",
        "label",
        "bootstrap_token",
        "auto_enabled",
        "gradio_endpoint_url",
        "supported_models_override",
    ):
        assert legacy not in table
    assert table["worker_id"] == "w-123"
    assert table["auth_token"] == "tok-0123456789abcdef"
    assert table["local_api_token"] == "a" * 64
    assert table["vram_threshold_gb"] == 8.0
    assert "registration_secret" not in table  # unset optional omitted
    assert "ws_reconnect_attempts" not in table


def test_invalid_toml_never_echoes_content(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    path = tmp_path / "config.toml"
    path.write_text('auth_token = "super-secret-token-value\nworker_id = = "w"\n')
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as err:
        ConfigStore(path).load()
    assert str(err.value) == "parsing config.toml: the file is not valid TOML; fix or delete it"
    assert "config file is not valid TOML" in caplog.text
    assert "super-secret" not in caplog.text
    assert "super-secret" not in str(err.value)
    assert err.value.__cause__ is None
    assert err.value.__suppress_context__


def test_non_utf8_is_invalid_toml(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_bytes(b'api_base_url = "\xff\xfe"\n')
    with pytest.raises(ConfigError, match="not valid TOML"):
        ConfigStore(path).load()


def test_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.mkdir()  # reading a directory fails with an OSError other than "not found"
    with pytest.raises(ConfigError, match=r"^reading .*config\.toml: "):
        ConfigStore(path).load()


def test_invalid_value_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text('vram_threshold_gb = "a-secret-looking-value"\n')
    with pytest.raises(ConfigError) as err:
        ConfigStore(path).load()
    assert "vram_threshold_gb" in str(err.value)
    assert "a-secret-looking-value" not in str(err.value)


@pytest.mark.skipif(sys.platform == "win32", reason="Unix file modes")
def test_saved_file_is_owner_only(tmp_path: Path) -> None:
    path = tmp_path / "config.toml"
    path.write_text("api_base_url = 'https://x/'\n")
    os.chmod(path, 0o644)
    store = ConfigStore(path)
    store.save(store.load())
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]  # no temp left behind


def test_failed_replace_keeps_old_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "config.toml"
    store = ConfigStore(path)
    store.save(Settings(worker_id="w-old"))
    before = path.read_bytes()

    def boom(src: object, dst: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(ConfigError, match=r"writing .*config\.toml: No space left on device"):
        store.save(Settings(worker_id="w-new"))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == ["config.toml"]


@pytest.mark.skipif(
    sys.platform == "win32" or os.geteuid() == 0, reason="needs Unix permissions, non-root"
)
def test_read_only_directory_keeps_old_file(tmp_path: Path) -> None:
    d = tmp_path / "ro"
    path = d / "config.toml"
    store = ConfigStore(path)
    store.save(Settings(worker_id="w-old"))
    d.chmod(0o500)
    try:
        with pytest.raises(ConfigError, match="writing"):
            store.save(Settings(worker_id="w-new"))
    finally:
        d.chmod(0o700)
    assert store.load().worker_id == "w-old"


def test_update_applies_changes_and_keeps_the_rest(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config.toml")
    store.save(Settings(worker_id="w-1", auth_token="t" * 20))
    updated = store.update(paused=True, vram_threshold_gb=4)
    assert updated.paused is True
    again = store.load()
    assert again == updated
    assert again.worker_id == "w-1"
    with pytest.raises(ConfigError, match="unknown config key"):
        store.update(bogus=1)


def test_stamp_changes_on_external_edit(tmp_path: Path) -> None:
    store = ConfigStore(tmp_path / "config.toml")
    assert store.stamp() is None
    assert store.mtime_ns() is None
    store.save(Settings())
    first = store.stamp()
    assert first is not None
    store.update(paused=True)
    assert store.stamp() != first


def test_store_teaches_the_redactor(tmp_path: Path) -> None:
    redactor = SecretRedactor()
    path = tmp_path / "config.toml"
    path.write_text('auth_token = "tok-0123456789abcdef"\n')
    ConfigStore(path, redactor=redactor).load()
    assert redactor.scrub("token tok-0123456789abcdef here") == "token *** here"
