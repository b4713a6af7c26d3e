"""studio-worker: a generation worker for the minis.gg studio and self-hosted studios."""

# A literal, not importlib.metadata: `studio-worker --version` must not pay for reading the
# installed distributions (~45 ms) before it can answer. release-please bumps this line with
# pyproject.toml's version (release-please-config.json, extra-files); a test keeps them equal.
__version__ = "0.5.0"  # x-release-please-version

AGENT_NAME = "studio-worker"


def user_agent() -> str:
    """The `userAgent` sent in register-request and on downloads (protocol §2.1, §9)."""
    return f"{AGENT_NAME}/{__version__}"
