"""Reading and atomically writing config.toml (behaviour §2.3).

The daemon owns the file; CLI commands edit it with `update`. Writes go to a temp file in
the same directory (0600 on Unix), are fsynced, then renamed over the target, so a reader
sees the old file or the new one, never half of either. Nothing here logs or raises with
a value from the file: it may be a secret.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
import threading
import tomllib
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import tomli_w

from studio_worker.config.errors import ConfigError
from studio_worker.config.redact import SecretRedactor
from studio_worker.config.settings import Settings

log = logging.getLogger(__name__)

FILE_MODE = 0o600


class FileStamp(NamedTuple):
    """Enough of `stat` to notice an external edit (an atomic replace changes the inode)."""

    mtime_ns: int
    size: int
    inode: int


class ConfigStore:
    """config.toml at `path`.

    `defaults` builds the settings written when the file is missing (the app passes one
    that applies the first-bootstrap VRAM clamp). `redactor`, when given, learns every
    secret that passes through the store so log handlers can mask it.
    """

    def __init__(
        self,
        path: Path,
        *,
        defaults: Callable[[], Settings] = Settings,
        redactor: SecretRedactor | None = None,
    ) -> None:
        self.path = path
        self._defaults = defaults
        self._redactor = redactor
        self._modify_lock = threading.Lock()

    def load(self) -> Settings:
        try:
            raw = self.path.read_bytes()
        except FileNotFoundError:
            return self._bootstrap()
        except OSError as exc:
            log.warning("failed to read config file", extra={"op": "load"})
            raise ConfigError(f"reading {self.path}: {_reason(exc)}") from None
        try:
            data = tomllib.loads(raw.decode("utf-8"))
        except (tomllib.TOMLDecodeError, UnicodeDecodeError):
            # No parser detail: it quotes the offending line, which may hold a secret.
            log.warning("config file is not valid TOML", extra={"op": "load"})
            raise ConfigError(
                "parsing config.toml: the file is not valid TOML; fix or delete it"
            ) from None
        settings = Settings.from_mapping(data)
        self._learn(settings)
        log.debug(
            "loaded config",
            extra={
                "op": "load",
                "source": "existing_file",
                "api_base_url": settings.api_base_url,
            },
        )
        return settings

    def save(self, settings: Settings) -> None:
        self._learn(settings)
        payload = tomli_w.dumps(settings.to_toml_dict()).encode("utf-8")
        try:
            self._write_atomically(payload)
        except OSError as exc:
            log.warning("failed to persist config to disk", extra={"op": "save"})
            raise ConfigError(f"writing {self.path}: {_reason(exc)}") from None
        log.debug("saved config", extra={"op": "save", "config_path": str(self.path)})

    def update(self, **changes: Any) -> Settings:
        """Load, apply `changes` (validated), save; returns what was saved."""
        return self.modify(lambda settings: settings.replace(**changes))

    def modify(self, change: Callable[[Settings], Settings]) -> Settings:
        """Load, apply `change`, save, as one step for every thread using this store (the
        daemon's registration, local API and tray write from different threads; without
        this one's load-then-save could undo another's edit). Returns what was saved."""
        with self._modify_lock:
            settings = change(self.load())
            self.save(settings)
            return settings

    def stamp(self) -> FileStamp | None:
        """The file's current stamp, or None when it does not exist."""
        try:
            st = self.path.stat()
        except OSError:
            return None
        return FileStamp(st.st_mtime_ns, st.st_size, st.st_ino)

    def mtime_ns(self) -> int | None:
        stamp = self.stamp()
        return None if stamp is None else stamp.mtime_ns

    def _bootstrap(self) -> Settings:
        settings = self._defaults()
        self.save(settings)
        log.info(
            "config file missing — bootstrapped defaults",
            extra={"op": "load", "source": "default_created", "config_path": str(self.path)},
        )
        return settings

    def _learn(self, settings: Settings) -> None:
        if self._redactor is not None:
            self._redactor.register_settings(settings)

    def _write_atomically(self, payload: bytes) -> None:
        write_atomically(self.path, payload)


def write_atomically(path: Path, payload: bytes) -> None:
    """Write `payload` to `path` through a temp file in the same directory (0600 on Unix),
    fsynced, then renamed over it: a reader sees the old file or the new one. Also used for
    the other owner-only state files next to config.toml (`ui.toml`)."""
    directory = path.parent
    directory.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as handle:
            if sys.platform != "win32":
                os.fchmod(handle.fileno(), FILE_MODE)
            handle.write(payload)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise
    _fsync_dir(directory)


def _fsync_dir(directory: Path) -> None:
    """Make the rename itself durable (best effort; not possible on Windows)."""
    if sys.platform == "win32":
        return
    try:
        fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _reason(exc: OSError) -> str:
    return exc.strerror or type(exc).__name__
