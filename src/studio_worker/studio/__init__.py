"""The self-hosted studio: the coordinator side of the worker protocol, on one port.

Imports only `studio_worker.domain` and `studio_worker.protocol` from the worker.
"""

from studio_worker.studio.records import JobRecord, JobStatus
from studio_worker.studio.server import StudioServer

__all__ = ["JobRecord", "JobStatus", "StudioServer"]
