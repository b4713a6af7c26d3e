"""The notify-py adapter: one desktop notification per call (the `desktop` extra).

On Linux notify-py runs `notify-send` when it is on PATH (looked up once, at its first
import) and otherwise talks D-Bus; without either it returns False, which the `Notifier`
logs once. macOS and Windows use their native notifiers.
"""

from __future__ import annotations

import logging
from pathlib import Path

from studio_worker.desktop.notices import APP_NAME

log = logging.getLogger(__name__)

INSTALL_HINT = "desktop notifications need notify-py: pip install 'studio-worker[desktop]'"


class NotifyUnavailable(Exception):
    """notify-py is not installed, or cannot start on this OS."""


def notify_py_sender(icon: Path | None = None) -> NotifyPySender:
    """A `Send` for `Notifier`; raises `NotifyUnavailable` with the fix when it cannot be."""
    try:
        from notifypy import Notify  # type: ignore[import-untyped, unused-ignore]
    except ImportError as exc:
        raise NotifyUnavailable(f"{INSTALL_HINT} ({exc})") from None
    try:
        Notify(enable_logging=False)  # picks the OS backend; fails here on unsupported OSes
    except Exception as exc:
        raise NotifyUnavailable(f"notify-py cannot run here: {exc}") from None
    return NotifyPySender(icon)


class NotifyPySender:
    def __init__(self, icon: Path | None) -> None:
        self._icon = icon

    def __call__(self, title: str, body: str) -> bool:
        from notifypy import Notify

        note = Notify(
            default_notification_application_name=APP_NAME,
            enable_logging=False,  # notify-py's loguru output stays off our stderr
        )
        note.title = title
        note.message = body
        if self._icon is not None and self._icon.is_file():
            note.icon = str(self._icon)
        return bool(note.send(block=True))
