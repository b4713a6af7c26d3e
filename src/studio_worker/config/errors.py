"""The one error type of the config package."""

from __future__ import annotations


class ConfigError(Exception):
    """The config file could not be read, parsed, validated or written.

    Messages name the file and the offending key, never a value: a value may be a secret.
    """
