from __future__ import annotations

from pathlib import Path, PurePosixPath, PureWindowsPath

import pytest

from studio_worker.config.paths import (
    config_path_for,
    default_config_path,
    default_models_root,
    expand_home,
    state_dir,
    state_file,
)


@pytest.mark.parametrize(
    ("platform", "env", "home", "expected"),
    [
        (
            "linux",
            {},
            PurePosixPath("/home/ada"),
            "/home/ada/.config/minis-studio-worker/config.toml",
        ),
        (
            "linux",
            {"XDG_CONFIG_HOME": "/srv/cfg"},
            PurePosixPath("/home/ada"),
            "/srv/cfg/minis-studio-worker/config.toml",
        ),
        (
            "linux",
            {"XDG_CONFIG_HOME": "relative/cfg"},
            PurePosixPath("/home/ada"),
            "/home/ada/.config/minis-studio-worker/config.toml",
        ),
        (
            "freebsd14",
            {"XDG_CONFIG_HOME": ""},
            PurePosixPath("/home/ada"),
            "/home/ada/.config/minis-studio-worker/config.toml",
        ),
        (
            "darwin",
            {"XDG_CONFIG_HOME": "/ignored"},
            PurePosixPath("/Users/ada"),
            "/Users/ada/Library/Application Support/gg.minis.minis-studio-worker/config.toml",
        ),
    ],
)
def test_unix_paths(platform: str, env: dict[str, str], home: PurePosixPath, expected: str) -> None:
    assert str(config_path_for(platform, env, home)) == expected


def test_windows_path_uses_appdata() -> None:
    path = config_path_for(
        "win32", {"APPDATA": r"C:\Users\Ada\AppData\Roaming"}, PureWindowsPath(r"C:\Users\Ada")
    )
    assert isinstance(path, PureWindowsPath)
    assert str(path) == r"C:\Users\Ada\AppData\Roaming\minis\minis-studio-worker\config\config.toml"


def test_windows_path_without_appdata_falls_back_to_roaming() -> None:
    path = config_path_for("win32", {}, PureWindowsPath(r"C:\Users\Ada"))
    assert str(path) == r"C:\Users\Ada\AppData\Roaming\minis\minis-studio-worker\config\config.toml"


def test_default_config_path_is_absolute_and_named_config_toml() -> None:
    path = default_config_path()
    assert path.is_absolute()
    assert path.name == "config.toml"


def test_state_files_live_next_to_the_config(tmp_path: Path) -> None:
    cfg = tmp_path / "a" / "config.toml"
    assert state_dir(cfg) == tmp_path / "a"
    assert state_file(cfg, "daemon.lock") == tmp_path / "a" / "daemon.lock"


def test_default_models_root() -> None:
    assert default_models_root(Path("/home/ada")) == Path("/home/ada/models")


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("~", "/home/ada"),
        ("~/models", "/home/ada/models"),
        ("~/a/b", "/home/ada/a/b"),
        ("/abs/models", "/abs/models"),
        ("rel/models", "rel/models"),
    ],
)
def test_expand_home(raw: str, expected: str) -> None:
    assert expand_home(Path(raw), home=Path("/home/ada")) == Path(expected)
