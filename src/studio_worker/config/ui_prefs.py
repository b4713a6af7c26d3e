"""`ui.toml`: the preferences of the window (behaviour §12.5 "This window", §12.7).

A small file of its own next to config.toml, because these are the operator's choices
about the desktop side (theme, motion, notifications), not the worker's: the daemon never
reads them. Keys: `theme` (`dark` default | `light` | `system`), `reduce_motion`,
`notify_on_completion`, `notify_on_failure` (all false by default). Unknown keys are
dropped on the next save; a known key with a bad value reads as its default; a file that
cannot be read or parsed reads as all defaults, with one warning (`op="prefs"`) per
version of the file. Saved atomically and owner-only like config.toml.

`UiPrefsFile.current()` is what a reader that runs every second calls (the tray's watch
loop): it re-reads the file only when its stamp changed, so a change made from the
dashboard (or by hand) applies at once, without a restart and without a read per call.
"""

from __future__ import annotations

import logging
import threading
import tomllib
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

import tomli_w

from studio_worker.config.errors import ConfigError
from studio_worker.config.paths import state_file
from studio_worker.config.store import FileStamp, write_atomically

log = logging.getLogger(__name__)

UI_PREFS_FILE = "ui.toml"
THEMES: tuple[str, ...] = ("dark", "light", "system")


@dataclass(frozen=True, slots=True)
class UiPrefs:
    theme: str = "dark"
    reduce_motion: bool = False
    notify_on_completion: bool = False
    notify_on_failure: bool = False

    def to_toml_dict(self) -> dict[str, Any]:
        return asdict(self)

    def with_changes(self, changes: Mapping[str, Any]) -> UiPrefs:
        """A copy with `changes` (snake_case keys); `ConfigError("<key>: <problem>")` on
        the first unknown key or bad value."""
        for key, value in changes.items():
            why = problem(key, value)
            if why is not None:
                raise ConfigError(f"{key}: {why}")
        return replace(self, **changes)


PREF_KEYS: tuple[str, ...] = tuple(f.name for f in fields(UiPrefs))


def problem(key: str, value: Any) -> str | None:
    """Why `value` cannot be the pref `key`, or None when it can."""
    if key not in PREF_KEYS:
        return "not a window preference"
    if key == "theme":
        return None if value in THEMES else f"must be one of {', '.join(THEMES)}"
    return None if isinstance(value, bool) else "must be true or false"


def prefs_from_mapping(data: Mapping[str, Any]) -> tuple[UiPrefs, list[str]]:
    """The prefs in `data` (unknown keys dropped, a bad value -> that key's default) and the
    problems found, as `<key>: <problem>`."""
    good: dict[str, Any] = {}
    problems: list[str] = []
    for key in PREF_KEYS:
        if key not in data:
            continue
        why = problem(key, data[key])
        if why is None:
            good[key] = data[key]
        else:
            problems.append(f"{key}: {why}")
    return UiPrefs(**good), problems


def ui_prefs_path(config_path: Path) -> Path:
    return state_file(config_path, UI_PREFS_FILE)


class UiPrefsFile:
    """`ui.toml` next to the config at `config_path`."""

    def __init__(self, config_path: Path) -> None:
        self.path = ui_prefs_path(config_path)
        self._lock = threading.Lock()
        self._stamp: FileStamp | None = None
        self._cached: UiPrefs | None = None

    def load(self) -> UiPrefs:
        """Read the file now: defaults when it is missing; defaults and a warning when it
        cannot be read or parsed, or holds a bad value."""
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return UiPrefs()
        except OSError as exc:
            log.warning(
                "cannot read %s (%s); using the default window preferences",
                self.path,
                exc.strerror or type(exc).__name__,
                extra={"op": "prefs"},
            )
            return UiPrefs()
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
            log.warning(
                "%s is not valid TOML (%s); using the default window preferences",
                self.path,
                exc,
                extra={"op": "prefs"},
            )
            return UiPrefs()
        prefs, problems = prefs_from_mapping(data)
        if problems:
            log.warning(
                "%s: %s; using the default for those",
                self.path,
                "; ".join(problems),
                extra={"op": "prefs"},
            )
        return prefs

    def current(self) -> UiPrefs:
        """The prefs as the file holds them now, re-read only when it changed."""
        with self._lock:
            stamp = self._file_stamp()
            if self._cached is None or stamp != self._stamp:
                self._cached, self._stamp = self.load(), stamp
            return self._cached

    def save(self, prefs: UiPrefs) -> None:
        payload = tomli_w.dumps(prefs.to_toml_dict()).encode("utf-8")
        try:
            write_atomically(self.path, payload)
        except OSError as exc:
            log.warning("failed to save the window preferences", extra={"op": "prefs"})
            raise ConfigError(
                f"writing {self.path}: {exc.strerror or type(exc).__name__}"
            ) from None

    def update(self, changes: Mapping[str, Any]) -> UiPrefs:
        """Apply `changes` (validated, `ConfigError` when not) to the file and save it, as
        one step; returns what was saved."""
        with self._lock:
            prefs = self.load().with_changes(changes)
            self.save(prefs)
            self._cached, self._stamp = prefs, self._file_stamp()
            return prefs

    def _file_stamp(self) -> FileStamp | None:
        try:
            st = self.path.stat()
        except OSError:
            return None
        return FileStamp(st.st_mtime_ns, st.st_size, st.st_ino)
