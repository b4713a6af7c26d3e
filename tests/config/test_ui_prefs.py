"""ui.toml, the window preferences (behaviour §12.7): defaults, saves, a corrupt file,
unknown keys and bad values, and the live read the tray's watch loop uses."""

from __future__ import annotations

import logging
import stat
import sys
import tomllib
from pathlib import Path

import pytest

from studio_worker.config.errors import ConfigError
from studio_worker.config.ui_prefs import UiPrefs, UiPrefsFile


def prefs_file(tmp_path: Path) -> UiPrefsFile:
    return UiPrefsFile(tmp_path / "config.toml")


def prefs_warnings(caplog: pytest.LogCaptureFixture) -> list[logging.LogRecord]:
    return [
        r
        for r in caplog.records
        if r.levelno == logging.WARNING and getattr(r, "op", None) == "prefs"
    ]


def test_a_missing_file_reads_as_the_defaults(tmp_path: Path) -> None:
    file = prefs_file(tmp_path)
    assert file.path == tmp_path / "ui.toml"  # next to config.toml
    assert file.load() == UiPrefs("dark", False, False, False)
    assert not file.path.exists()  # reading never creates it


def test_a_save_round_trips_atomically_and_owner_only(tmp_path: Path) -> None:
    file = prefs_file(tmp_path)
    saved = file.update({"theme": "light", "notify_on_completion": True})
    assert saved == UiPrefs(theme="light", notify_on_completion=True)
    assert tomllib.loads(file.path.read_text()) == {
        "theme": "light",
        "reduce_motion": False,
        "notify_on_completion": True,
        "notify_on_failure": False,
    }
    assert prefs_file(tmp_path).load() == saved
    assert [p.name for p in tmp_path.iterdir()] == ["ui.toml"]  # no temp file left
    if sys.platform != "win32":
        assert stat.S_IMODE(file.path.stat().st_mode) == 0o600


@pytest.mark.parametrize(
    "content",
    [b"theme = \n", b"\xff\xfe not utf-8", b"[[[", b"theme = 'light'\ntheme = 'dark'\n"],
)
def test_an_unreadable_file_reads_as_the_defaults_with_one_warning(
    tmp_path: Path, content: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    file = prefs_file(tmp_path)
    file.path.write_bytes(content)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):  # the watch loop reads every second: one warning, not three
            assert file.current() == UiPrefs()
    warnings = prefs_warnings(caplog)
    assert len(warnings) == 1
    assert "using the default window preferences" in warnings[0].getMessage()


def test_a_file_that_cannot_be_opened_reads_as_the_defaults(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = prefs_file(tmp_path)
    file.path.mkdir()  # opening it fails, for root too
    with caplog.at_level(logging.WARNING):
        assert file.load() == UiPrefs()
    (warning,) = prefs_warnings(caplog)
    assert warning.getMessage().startswith(f"cannot read {file.path}")


def test_unknown_keys_are_dropped_and_a_bad_value_reads_as_its_default(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    file = prefs_file(tmp_path)
    file.path.write_text(
        'theme = "neon"\nreduce_motion = true\nnotify_on_failure = "yes"\nwindow_x = 40\n'
    )
    with caplog.at_level(logging.WARNING):
        assert file.load() == UiPrefs(reduce_motion=True)
    (warning,) = prefs_warnings(caplog)
    assert "theme: must be one of dark, light, system" in warning.getMessage()
    assert "notify_on_failure: must be true or false" in warning.getMessage()
    file.update({"notify_on_completion": True})
    assert tomllib.loads(file.path.read_text()) == {
        "theme": "dark",
        "reduce_motion": True,
        "notify_on_completion": True,
        "notify_on_failure": False,
    }


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"theme": "blue"}, "theme: must be one of dark, light, system"),
        ({"reduce_motion": 1}, "reduce_motion: must be true or false"),
        ({"font": "big"}, "font: not a window preference"),
    ],
)
def test_update_refuses_a_bad_change_and_writes_nothing(
    tmp_path: Path, changes: dict[str, object], message: str
) -> None:
    file = prefs_file(tmp_path)
    with pytest.raises(ConfigError, match=message):
        file.update(changes)
    assert not file.path.exists()


def test_current_follows_the_file_without_a_restart(tmp_path: Path) -> None:
    file = prefs_file(tmp_path)
    assert file.current().notify_on_completion is False
    other = prefs_file(tmp_path)  # another process or the dashboard's route
    other.update({"notify_on_completion": True})
    assert file.current().notify_on_completion is True
    file.path.write_text('notify_on_completion = false\ntheme = "system"\n')  # by hand
    assert file.current() == UiPrefs(theme="system")
    file.path.unlink()
    assert file.current() == UiPrefs()
