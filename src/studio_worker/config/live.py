"""The live view of config.toml for a running daemon: edits apply without a restart.

`current` re-reads the file only when its stamp changed (one stat per call), so
`studio-worker disable`, `set-threshold` or a hand edit reach the next heartbeat.
A file that turns unreadable keeps the last good settings and is logged once.
"""

from __future__ import annotations

import logging

from studio_worker.config.errors import ConfigError
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore, FileStamp
from studio_worker.protocol.urls import StudioLink

log = logging.getLogger(__name__)


class LiveConfig:
    def __init__(self, store: ConfigStore, initial: Settings) -> None:
        self._store = store
        self._settings = initial
        self._stamp: FileStamp | None = store.stamp()
        self._broken = False

    @property
    def current(self) -> Settings:
        stamp = self._store.stamp()
        if stamp is not None and stamp != self._stamp:
            try:
                self._settings = self._store.load()
            except ConfigError as exc:
                if not self._broken:
                    log.warning(
                        "config changed but cannot be read; keeping the last good one: %s", exc
                    )
                self._broken = True
            else:
                self._broken = False
            self._stamp = stamp
        return self._settings

    def link(self) -> StudioLink | None:
        settings = self.current
        if settings.worker_id and settings.auth_token:
            return StudioLink(settings.api_base_url, settings.worker_id, settings.auth_token)
        return None
