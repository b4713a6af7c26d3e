"""Auto-registration: the register-request + poll client (protocol §2.1-§2.2, §6)."""

from studio_worker.registration.client import STOPPED_MESSAGE, RegistrationClient

__all__ = ["STOPPED_MESSAGE", "RegistrationClient"]
