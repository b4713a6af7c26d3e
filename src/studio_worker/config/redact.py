"""Keeping secrets out of logs and displays (protocol §7, behaviour §2.3).

`SecretRedactor` is a logging filter the app installs on every handler: it replaces each
registered secret value with `***` in the formatted message and in exception text.
`redacted` is the display form of a `Settings` (CLI `config`, status pages).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable
from typing import Any

from studio_worker.config.settings import SECRET_KEYS, Settings

MASK = "***"
DISPLAY_MASK = "<redacted>"
MIN_SECRET_CHARS = 8
"""Shorter values are not masked: they would blank out ordinary words and numbers."""


class SecretRedactor(logging.Filter):
    """Masks every registered secret in records passing through a handler."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._secrets: frozenset[str] = frozenset()
        for secret in secrets:
            self.register(secret)

    def register(self, secret: str | None) -> None:
        if not secret or len(secret) < MIN_SECRET_CHARS:
            return
        with self._lock:
            self._secrets = self._secrets | {secret}

    def register_settings(self, settings: Settings) -> None:
        for key in SECRET_KEYS:
            self.register(getattr(settings, key))

    def scrub(self, text: str) -> str:
        # Longest first, so a secret containing another is masked whole.
        for secret in sorted(self._secrets, key=len, reverse=True):
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        if not self._secrets:
            return True
        message = record.getMessage()
        scrubbed = self.scrub(message)
        if scrubbed != message:
            record.msg, record.args = scrubbed, None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        for name, value in list(vars(record).items()):
            if name not in _STANDARD_ATTRS and isinstance(value, str):
                setattr(record, name, self.scrub(value))  # structured `extra=` fields
        return True


_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime"}


def redacted(settings: Settings) -> dict[str, Any]:
    """The TOML table of `settings` with every secret replaced by `<redacted>`."""
    data = settings.to_toml_dict()
    return {key: (DISPLAY_MASK if key in SECRET_KEYS else value) for key, value in data.items()}
