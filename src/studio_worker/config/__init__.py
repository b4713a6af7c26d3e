"""Configuration: where config.toml lives, what it holds, and how it is read and written."""

from studio_worker.config.errors import ConfigError
from studio_worker.config.paths import default_config_path, state_dir, state_file
from studio_worker.config.redact import SecretRedactor, redacted
from studio_worker.config.settings import SECRET_KEYS, Settings
from studio_worker.config.store import ConfigStore, FileStamp

__all__ = [
    "SECRET_KEYS",
    "ConfigError",
    "ConfigStore",
    "FileStamp",
    "SecretRedactor",
    "Settings",
    "default_config_path",
    "redacted",
    "state_dir",
    "state_file",
]
