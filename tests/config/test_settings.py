from __future__ import annotations

from pathlib import Path

import pytest

from studio_worker.config.errors import ConfigError
from studio_worker.config.redact import redacted
from studio_worker.config.settings import Settings
from studio_worker.protocol.registration import Credentials

REFERENCE_KEYS = [
    "api_base_url",
    "vram_threshold_gb",
    "start_minimised",
    "auto_start",
    "only_when_idle",
    "auto_update_enabled",
    "auto_update_interval_secs",
    "auto_update_feed",
    "auto_update_prerelease",
    "models_root",
    "ws_reconnect_attempts",
    "local_api_port",
    "stream_port",
    "local_api_token",
    "worker_id",
    "auth_token",
    "install_id",
    "registration_request_id",
    "registration_secret",
]


def test_keys_are_the_reference_keys_plus_paused() -> None:
    assert list(Settings.model_fields) == [*REFERENCE_KEYS, "paused"]


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    s = Settings()
    assert s.api_base_url == "https://studio.minis.gg/"
    assert s.vram_threshold_gb == 12.0
    assert s.start_minimised is True
    assert s.auto_start is True
    assert s.only_when_idle is False
    assert s.auto_update_enabled is True
    assert s.auto_update_interval_secs == 1800
    assert s.auto_update_feed == "https://api.github.com/repos/webbertakken/studio-worker/releases"
    assert s.auto_update_prerelease is False
    assert s.models_root == tmp_path / "models"
    assert s.paused is False
    for key in REFERENCE_KEYS[10:]:
        assert getattr(s, key) is None


def test_unset_optionals_are_omitted_from_the_saved_table() -> None:
    table = Settings().to_toml_dict()
    assert "worker_id" not in table
    assert "ws_reconnect_attempts" not in table
    assert table["models_root"] == str(Settings().models_root)


def test_tilde_models_root_is_expanded(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    assert Settings.from_mapping({"models_root": "~/m"}).models_root == tmp_path / "m"
    assert Settings.from_mapping({"models_root": "~"}).models_root == tmp_path


def test_unknown_keys_are_ignored() -> None:
    s = Settings.from_mapping({"engine": "sd-cpp", "label": "x", "vram_threshold_gb": 8})
    assert s.vram_threshold_gb == 8.0
    assert "engine" not in s.to_toml_dict()


def test_validation_error_names_key_but_not_value() -> None:
    with pytest.raises(ConfigError) as err:
        Settings.from_mapping({"auth_token": ["sekrit-value-123"], "vram_threshold_gb": "lots"})
    message = str(err.value)
    assert "auth_token" in message
    assert "vram_threshold_gb" in message
    assert "sekrit-value-123" not in message
    assert "lots" not in message


def test_negative_threshold_is_invalid() -> None:
    with pytest.raises(ConfigError, match="vram_threshold_gb"):
        Settings.from_mapping({"vram_threshold_gb": -1})


def test_replace_validates_and_rejects_unknown_keys() -> None:
    s = Settings()
    assert s.replace(paused=True).paused is True
    with pytest.raises(ConfigError, match="unknown config key: nope"):
        s.replace(nope=1)
    with pytest.raises(ConfigError):
        s.replace(stream_port=70000)


def test_credentials_round_trip() -> None:
    creds = Credentials(
        install_id="i", registration_request_id="rr-1", registration_secret="s" * 64
    )
    s = Settings().with_credentials(creds)
    assert s.credentials() == creds
    cleared = s.with_credentials(Credentials(install_id="i", worker_id="w", auth_token="t"))
    assert cleared.registration_request_id is None
    assert cleared.registration_secret is None
    assert cleared.credentials().approved


def test_repr_and_redacted_hide_secrets() -> None:
    s = Settings(auth_token="tok-abcdefgh", registration_secret="sec-abcdefgh", worker_id="w-1")
    assert "tok-abcdefgh" not in repr(s)
    assert "sec-abcdefgh" not in repr(s)
    shown = redacted(s)
    assert shown["auth_token"] == "<redacted>"
    assert shown["registration_secret"] == "<redacted>"
    assert shown["worker_id"] == "w-1"
    assert "local_api_token" not in shown
