from __future__ import annotations

import io
import logging

import pytest

from studio_worker.config.redact import SecretRedactor
from studio_worker.config.settings import Settings

SECRET = "0123456789abcdef" * 4


@pytest.fixture
def captured() -> tuple[logging.Logger, io.StringIO, SecretRedactor]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(message)s|%(op)s"))
    redactor = SecretRedactor()
    handler.addFilter(redactor)
    logger = logging.getLogger("test.redact")
    logger.handlers[:] = [handler]
    logger.propagate = False
    logger.setLevel(logging.DEBUG)
    return logger, stream, redactor


def test_message_args_extra_and_exceptions_are_masked(
    captured: tuple[logging.Logger, io.StringIO, SecretRedactor],
) -> None:
    logger, stream, redactor = captured
    redactor.register_settings(Settings(auth_token=SECRET))
    logger.info("token is %s", SECRET, extra={"op": f"x{SECRET}"})
    try:
        raise RuntimeError(f"bad {SECRET}")
    except RuntimeError:
        logger.exception("failed", extra={"op": "y"})
    text = stream.getvalue()
    assert SECRET not in text
    assert "token is ***|x***" in text
    assert "RuntimeError: bad ***" in text


def test_short_and_empty_values_are_not_registered(
    captured: tuple[logging.Logger, io.StringIO, SecretRedactor],
) -> None:
    logger, stream, redactor = captured
    redactor.register("")
    redactor.register(None)
    redactor.register("ab")
    logger.info("ab cd", extra={"op": "z"})
    assert stream.getvalue() == "ab cd|z\n"


def test_longest_secret_masked_whole() -> None:
    redactor = SecretRedactor(["abcdefgh", "abcdefgh-ijkl"])
    assert redactor.scrub("x abcdefgh-ijkl y") == "x *** y"
