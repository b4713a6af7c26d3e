"""Where the config file and its sibling state files live (behaviour §2.1).

The location matches the reference worker's "project dirs" for qualifier `gg`,
organisation `minis`, application `minis-studio-worker`, so an operator can swap workers
and keep the same registration. `config_path_for` is pure (platform, environment and home
are arguments) so every OS is testable anywhere; `default_config_path` feeds it the real ones.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePath, PurePosixPath, PureWindowsPath

APP_DIR = "minis-studio-worker"
MACOS_BUNDLE_DIR = "gg.minis.minis-studio-worker"
CONFIG_FILE_NAME = "config.toml"


def config_path_for(platform: str, env: Mapping[str, str], home: PurePath) -> PurePath:
    """The reference config path for `platform` (a `sys.platform` value).

    - Linux and other Unixes: `$XDG_CONFIG_HOME/minis-studio-worker/config.toml`
      (only an absolute `XDG_CONFIG_HOME` counts, as in the XDG spec), else `~/.config/…`.
    - macOS: `~/Library/Application Support/gg.minis.minis-studio-worker/config.toml`.
    - Windows: `%APPDATA%\\minis\\minis-studio-worker\\config\\config.toml`
      (`~\\AppData\\Roaming` when APPDATA is unset).
    """
    if platform == "darwin":
        base = PurePosixPath(home) / "Library" / "Application Support" / MACOS_BUNDLE_DIR
        return base / CONFIG_FILE_NAME
    if platform in ("win32", "cygwin"):
        appdata = env.get("APPDATA", "")
        roaming = (
            PureWindowsPath(appdata)
            if appdata and PureWindowsPath(appdata).is_absolute()
            else PureWindowsPath(home) / "AppData" / "Roaming"
        )
        return roaming / "minis" / APP_DIR / "config" / CONFIG_FILE_NAME
    xdg = env.get("XDG_CONFIG_HOME", "")
    config_home = (
        PurePosixPath(xdg)
        if xdg and PurePosixPath(xdg).is_absolute()
        else PurePosixPath(home) / ".config"
    )
    return config_home / APP_DIR / CONFIG_FILE_NAME


def default_config_path() -> Path:
    """The config path of this machine and user (before any `--config` override)."""
    return Path(config_path_for(sys.platform, os.environ, Path.home()))


def state_dir(config_path: Path) -> Path:
    """The directory every other state file lives in: the config file's own directory."""
    return config_path.parent


def state_file(config_path: Path, name: str) -> Path:
    """A state file next to the active config (`models.json`, `daemon.lock`, …)."""
    return state_dir(config_path) / name


def default_models_root(home: Path | None = None) -> Path:
    """`~/models`, or `<tmp>/studio-worker-models` when there is no home directory."""
    if home is None:
        try:
            home = Path.home()
        except RuntimeError:  # no HOME / no passwd entry
            return Path(tempfile.gettempdir()) / "studio-worker-models"
    return home / "models"


def expand_home(path: Path, home: Path | None = None) -> Path:
    """Expand a leading `~` or `~/` (never leaves a literal `~` directory name)."""
    parts = path.parts
    if not parts or parts[0] != "~":
        if not str(path).startswith("~"):
            return path
        try:
            return path.expanduser()  # `~user/...`
        except RuntimeError:
            return path
    if home is None:
        try:
            home = Path.home()
        except RuntimeError:
            home = Path(tempfile.gettempdir())
    return home.joinpath(*parts[1:])
