"""The filename and URL guards (models/paths.py, engines/inputs.py) under arbitrary input:
nothing accepted escapes its folder; nothing accepted is non-https and non-loopback."""

from __future__ import annotations

import ipaddress
import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import pytest
from hypothesis import given
from hypothesis import strategies as st

from studio_worker.domain.results import JobError
from studio_worker.engines import inputs
from studio_worker.models import paths
from studio_worker.models.errors import ModelError

from ._profile import fuzz, timed

ROOT = Path(tempfile.gettempdir()) / "fuzz-models-root" / "engine" / "model"
names = st.text(max_size=40) | st.sampled_from(
    [
        "..", ".", "../x", "a/../../x", "/etc/passwd", "C:evil", "C:\\x", "\\\\server\\share",
        "x\0y", "..\\x", "....", "a..b", "~", "~root", "nul", "con.gguf", "model.gguf",
    ]
)  # fmt: skip
urls = (
    st.text(max_size=60)
    | st.builds(
        lambda scheme, host, rest: f"{scheme}://{host}{rest}",
        st.sampled_from(["http", "https", "HTTP", "HTTPS", "ftp", "file", "javascript", ""]),
        st.sampled_from(
            [
                "127.0.0.1", "localhost", "[::1]", "example.com", "127.0.0.1.evil.com",
                "localhost.evil.com", "evil.com@127.0.0.1", "127.0.0.1@evil.com", "0.0.0.0",
                "[::ffff:127.0.0.1]", "10.0.0.1", "", "user:pw@localhost:1",
            ]
        ),
        st.text(max_size=20),
    )
)  # fmt: skip


def _inside(root: Path, name: str) -> bool:
    joined = os.path.normpath(os.path.join(root, name))
    return os.path.dirname(joined) == str(root)


@fuzz(200)
@given(name=names)
def test_check_filename_accepts_only_plain_names(name: str) -> None:
    try:
        accepted = timed(paths.check_filename, name)
    except ModelError as exc:
        assert not exc.retryable
        return
    assert accepted == name
    assert _inside(ROOT, name), name
    assert Path(name).name == name and not Path(name).is_absolute()


@fuzz(200)
@given(value=st.text(max_size=40))
def test_sanitise_id_is_one_safe_segment(value: str) -> None:
    safe = timed(paths.sanitise_id, value)
    assert safe and not safe.startswith(".")
    assert _inside(ROOT.parent, safe)


def _allowed(url: str) -> bool:
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if not host:
        return False
    if parts.scheme.lower() == "https":
        return True
    if parts.scheme.lower() != "http":
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


@fuzz(200)
@given(url=urls)
def test_models_check_url(url: str) -> None:
    try:
        timed(paths.check_url, url)
    except ModelError as exc:
        assert not exc.retryable
        return
    assert _allowed(url), url


@fuzz(200)
@given(url=urls)
def test_engines_check_url(url: str) -> None:
    try:
        timed(inputs.check_url, url)
    except JobError as exc:
        assert not exc.retryable
        return
    assert _allowed(url), url


@pytest.mark.parametrize("url", ["https://[", "http://[::1", "https://]x"])
def test_engines_check_url_malformed_ipv6_is_a_job_error(url: str) -> None:
    with pytest.raises(JobError):
        inputs.check_url(url)
