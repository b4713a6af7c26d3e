"""The config loader under arbitrary files: Settings or ConfigError, and the error message
never quotes a secret value that was in the file (behaviour §2.3)."""

from __future__ import annotations

import tempfile
from pathlib import Path

import tomli_w
from hypothesis import assume, given
from hypothesis import strategies as st

from studio_worker.config.errors import ConfigError
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore

from ._profile import fuzz, timed

SECRETS = {
    "auth_token": "at_SECRET_5d3a48c2b6e1f4a7",
    "registration_secret": "rs_SECRET_51c0ffee51c0",
    "local_api_token": "la_SECRET_9c3e8b2b6e1f",
}
FIELDS = list(Settings.model_fields)
toml_scalars = (
    st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**63 - 1)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=30)
)
toml_values = st.recursive(
    toml_scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)


def load(raw: bytes) -> Settings | None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "config.toml"
        path.write_bytes(raw)
        try:
            settings = timed(ConfigStore(path).load)
        except ConfigError as exc:
            message = str(exc)
            assert message
            for secret in SECRETS.values():
                assert secret not in message, message
            return None
    return settings


def real_file() -> dict[str, object]:
    return {**Settings(models_root=Path("/srv/models")).to_toml_dict(), **SECRETS}


@fuzz(80)
@given(text=st.text(max_size=200))
def test_arbitrary_text(text: str) -> None:
    load(text.encode("utf-8", "surrogatepass"))


@fuzz(60)
@given(raw=st.binary(max_size=200))
def test_arbitrary_bytes(raw: bytes) -> None:
    load(raw)


@fuzz(120)
@given(
    changes=st.dictionaries(st.sampled_from(FIELDS) | st.text(max_size=10), toml_values, max_size=4)
)
def test_real_file_with_fields_of_any_type(changes: dict[str, object]) -> None:
    """Every key of a real file (secrets included) with arbitrary TOML values mixed in."""
    table = {**real_file(), **changes}
    try:
        raw = tomli_w.dumps(table).encode()
    except (TypeError, ValueError):
        assume(False)
    load(raw)


@fuzz(120)
@given(cut=st.integers(min_value=0), insert=st.text(max_size=6))
def test_real_file_truncated_or_spliced(cut: int, insert: str) -> None:
    text = tomli_w.dumps(real_file())
    at = cut % (len(text) + 1)
    load(text[:at].encode())
    load((text[:at] + insert + text[at:]).encode("utf-8", "surrogatepass"))


@fuzz(60)
@given(key=st.sampled_from(FIELDS), bad=toml_values)
def test_a_secret_next_to_a_bad_value_is_never_quoted(key: str, bad: object) -> None:
    """The secret of each key is also put as the bad value of another key."""
    for secret in SECRETS.values():
        table = {**real_file(), key: secret}
        load(tomli_w.dumps(table).encode())
        table = {**real_file(), key: [secret, bad]}
        try:
            raw = tomli_w.dumps(table).encode()
        except (TypeError, ValueError):
            continue
        load(raw)
