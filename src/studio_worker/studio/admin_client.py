"""A small httpx client of the studio's admin API, for the `studio` CLI commands."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx

from studio_worker.studio.server import ADMIN_TOKEN_FILE


class AdminError(Exception):
    """A readable failure (unreachable studio, bad token, refused request)."""


def resolve_admin_token(explicit: str | None, data_dir: Path) -> str:
    if explicit:
        return explicit
    path = data_dir / ADMIN_TOKEN_FILE
    try:
        return path.read_text(encoding="utf-8").strip()
    except OSError:
        raise AdminError(
            f"no admin token: pass --admin-token or start the studio once so it writes {path}"
        ) from None


class AdminClient:
    def __init__(self, base_url: str, token: str, *, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self._http = httpx.Client(
            base_url=self.base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def request(self, method: str, path: str, body: Any = None) -> httpx.Response:
        try:
            response = self._http.request(method, path, json=body)
        except httpx.HTTPError as exc:
            raise AdminError(f"cannot reach the studio at {self.base_url}: {exc}") from None
        if response.status_code == 401:
            raise AdminError("the studio refused the admin token (401)")
        if response.status_code >= 400:
            raise AdminError(
                f"{method} {path} failed ({response.status_code}): {_reason(response)}"
            )
        return response

    def json(self, method: str, path: str, body: Any = None) -> Any:
        return self.request(method, path, body).json()


def _reason(response: httpx.Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text.strip()[:300]
    error = data.get("error") if isinstance(data, dict) else None
    if isinstance(error, str):
        return error
    return str(data)[:300]
