"""Model files: the on-disk cache and the resumable, verified downloader (behaviour §9)."""

from studio_worker.models.errors import ModelError, ModelNotCached
from studio_worker.models.paths import check_filename, check_url, sanitise_id
from studio_worker.models.store import (
    CachedFile,
    CachedModel,
    DownloadProgress,
    ModelStore,
    disk_free_bytes,
)

__all__ = [
    "CachedFile",
    "CachedModel",
    "DownloadProgress",
    "ModelError",
    "ModelNotCached",
    "ModelStore",
    "check_filename",
    "check_url",
    "disk_free_bytes",
    "sanitise_id",
]
