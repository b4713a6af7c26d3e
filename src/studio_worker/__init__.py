"""studio-worker: a generation worker for the minis.gg studio and self-hosted studios."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("studio-worker")
except PackageNotFoundError:  # running from a source tree without an install
    __version__ = "0.0.0"

AGENT_NAME = "studio-worker"


def user_agent() -> str:
    """The `userAgent` sent in register-request and on downloads (protocol §2.1, §9)."""
    return f"{AGENT_NAME}/{__version__}"
