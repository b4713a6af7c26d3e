"""`Settings`: the keys of config.toml (behaviour §2.2), plus the keys only we have.

Reference keys keep their names and defaults so an operator can swap the Rust worker for
ours and keep the same file. Unknown keys (legacy `engine`, `label`, `bootstrap_token`, …)
are ignored on load and dropped on the next save; unset optional keys are omitted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from studio_worker.config.errors import ConfigError
from studio_worker.config.paths import default_models_root, expand_home
from studio_worker.protocol.registration import Credentials

DEFAULT_API_BASE_URL = "https://studio.minis.gg/"
DEFAULT_VRAM_THRESHOLD_GB = 12.0
DEFAULT_AUTO_UPDATE_INTERVAL_SECS = 1800
DEFAULT_AUTO_UPDATE_FEED = "https://api.github.com/repos/webbertakken/studio-worker/releases"

SECRET_KEYS: tuple[str, ...] = ("auth_token", "registration_secret", "local_api_token")
"""Keys whose values never appear in a log line, an error or a default display."""

CREDENTIAL_KEYS: tuple[str, ...] = (
    "install_id",
    "registration_request_id",
    "registration_secret",
    "worker_id",
    "auth_token",
)


class Settings(BaseModel):
    """One immutable view of config.toml. Build changed copies with `replace`."""

    model_config = ConfigDict(frozen=True, extra="ignore", validate_default=True)

    api_base_url: str = DEFAULT_API_BASE_URL
    vram_threshold_gb: float = Field(default=DEFAULT_VRAM_THRESHOLD_GB, ge=0)
    start_minimised: bool = True
    auto_start: bool = True
    only_when_idle: bool = False
    auto_update_enabled: bool = True
    auto_update_interval_secs: int = Field(default=DEFAULT_AUTO_UPDATE_INTERVAL_SECS, ge=0)
    auto_update_feed: str = DEFAULT_AUTO_UPDATE_FEED
    auto_update_prerelease: bool = False
    models_root: Path = Field(default_factory=default_models_root)
    ws_reconnect_attempts: int | None = Field(default=None, ge=0)
    local_api_port: int | None = Field(default=None, ge=0, le=65535)
    stream_port: int | None = Field(default=None, ge=0, le=65535)
    local_api_token: str | None = Field(default=None, repr=False)
    worker_id: str | None = None
    auth_token: str | None = Field(default=None, repr=False)
    install_id: str | None = None
    registration_request_id: str | None = None
    registration_secret: str | None = Field(default=None, repr=False)
    # Ours only: claiming paused by the operator (`studio-worker disable` / `enable`).
    # Unlike the reference's runtime-only pause, this one survives restarts.
    paused: bool = False

    @field_validator("models_root", mode="after")
    @classmethod
    def _expand_models_root(cls, value: Path) -> Path:
        return expand_home(value)

    @field_validator("api_base_url", "auto_update_feed", mode="after")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be empty")
        return value.strip()

    @classmethod
    def from_mapping(cls, data: dict[str, Any]) -> Settings:
        """Validate a loaded TOML table; errors name keys, never values."""
        try:
            return cls.model_validate(data)
        except ValidationError as exc:
            raise ConfigError(f"invalid config: {describe_errors(exc)}") from None

    def replace(self, **changes: Any) -> Settings:
        """A validated copy with `changes` applied (unknown keys are an error here)."""
        unknown = sorted(set(changes) - set(type(self).model_fields))
        if unknown:
            raise ConfigError(f"unknown config key: {', '.join(unknown)}")
        return type(self).from_mapping({**self.model_dump(), **changes})

    def credentials(self) -> Credentials:
        return Credentials(**{key: getattr(self, key) for key in CREDENTIAL_KEYS})

    def with_credentials(self, creds: Credentials) -> Settings:
        return self.replace(**{key: getattr(creds, key) for key in CREDENTIAL_KEYS})

    def to_toml_dict(self) -> dict[str, Any]:
        """What `save` writes: known keys in declaration order, unset optionals left out."""
        data = self.model_dump(mode="json", exclude_none=True)
        return {key: data[key] for key in type(self).model_fields if key in data}


def describe_errors(exc: ValidationError) -> str:
    """`key: problem; key: problem` from pydantic errors, without the offending input."""
    parts = []
    for error in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(p) for p in error["loc"]) or "(file)"
        parts.append(f"{loc}: {error['msg']}")
    return "; ".join(parts)
