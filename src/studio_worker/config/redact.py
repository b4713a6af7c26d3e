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
        # longest first, so a secret containing another is masked whole
        self._ordered: tuple[str, ...] = ()
        for secret in secrets:
            self.register(secret)

    def register(self, secret: str | None) -> None:
        if not secret or len(secret) < MIN_SECRET_CHARS:
            return
        with self._lock:
            self._secrets = self._secrets | {secret}
            self._ordered = tuple(sorted(self._secrets, key=len, reverse=True))

    def register_settings(self, settings: Settings) -> None:
        for key in SECRET_KEYS:
            self.register(getattr(settings, key))

    def scrub(self, text: str) -> str:
        for secret in self._ordered:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def filter(self, record: logging.LogRecord) -> bool:
        fields = record.__dict__
        if not self._ordered or fields.get(_SCRUBBED):
            return True  # nothing to hide, or another handler's filter already did it
        # Formatted once here: every handler after this one reads the final text.
        record.msg, record.args = self.scrub(record.getMessage()), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = self.scrub(record.exc_text)
        for name in fields.keys() - _STANDARD_ATTRS:
            value = fields[name]
            if isinstance(value, str):
                fields[name] = self.scrub(value)  # structured `extra=` fields
        fields[_SCRUBBED] = True
        return True


_SCRUBBED = "_secrets_scrubbed"
"""Set on a record once scrubbed: the filter sits on every handler, and a record passes
each of them."""
_STANDARD_ATTRS = frozenset(vars(logging.makeLogRecord({}))) | {"message", "asctime", _SCRUBBED}


def redacted(settings: Settings) -> dict[str, Any]:
    """The TOML table of `settings` with every secret replaced by `<redacted>`."""
    data = settings.to_toml_dict()
    return {key: (DISPLAY_MASK if key in SECRET_KEYS else value) for key, value in data.items()}
