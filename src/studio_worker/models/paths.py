"""Names on disk and the URL guard (behaviour §9.1, protocol §9).

Every name that comes from the wire is made safe before it touches the filesystem:
engine and model ids are sanitised into one path segment each; file names must already
be plain names and are refused otherwise (a registry row with `../x` is a bug or an
attack, never something to repair silently).
"""

from __future__ import annotations

import ntpath
import re

from studio_worker.models.errors import ModelError
from studio_worker.protocol.urls import display_url, download_allowed, is_loopback

__all__ = ["check_filename", "check_url", "display_url", "is_loopback", "sanitise_id"]

_UNSAFE_ID_CHARS = re.compile(r"[^A-Za-z0-9._-]")


def sanitise_id(value: str) -> str:
    """One safe path segment: chars outside `[A-Za-z0-9._-]` become `_`, empty becomes `_`,
    a leading `.` becomes `_` (`..` -> `_.`, `.git` -> `_git`, `org/model:v2` -> `org_model_v2`).
    """
    safe = _UNSAFE_ID_CHARS.sub("_", value)
    if not safe:
        return "_"
    if safe.startswith("."):
        safe = "_" + safe[1:]
    return safe


def check_filename(name: str) -> str:
    """Return `name` when it is a plain file name, else raise a non-retryable ModelError."""
    unsafe = (
        not name
        or name in {".", ".."}
        or "/" in name
        or "\\" in name
        or ".." in name
        or "\0" in name
        or bool(ntpath.splitdrive(name)[0])  # `C:model.gguf`: relative to a drive's cwd
    )
    if unsafe:
        raise ModelError(f'model filename must be a plain file name: "{name}"', retryable=False)
    return name


def check_url(url: str, *, what: str = "model file") -> str:
    """Return `url` when it is https (or plain http to loopback), else raise (not retryable)."""
    if download_allowed(url):
        return url
    raise ModelError(
        f"{what} URL must use https (loopback http is allowed for tests/mirrors): "
        f"{display_url(url)}",
        retryable=False,
    )
