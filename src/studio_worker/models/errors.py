"""Why a model could not be made ready: every failure is a `JobError` for the job it serves."""

from __future__ import annotations

from studio_worker.domain.results import JobError


class ModelError(JobError):
    """A model file could not be found, fetched or verified.

    `retryable` says whether the studio may offer the job again: a bad registry row
    (unsafe filename, plain-http URL) fails the same everywhere, a network or disk
    problem may not.
    """

    retryable = True


class ModelNotCached(ModelError):
    """`remove` was asked for a model that is not on disk."""

    retryable = False
