"""The local API (behaviour §8): a token-protected loopback HTTP server for local programs.

`LocalApi` binds 127.0.0.1, writes the `local-api.json` discovery file and serves the
daemon's status, logs, controls, jobs and models, plus OpenAI-shaped local inference on
the worker's engines that shares the one-job gate with studio offers.
"""

from studio_worker.localapi.logring import LogRing
from studio_worker.localapi.server import LocalApi, LocalApiDeps

__all__ = ["LocalApi", "LocalApiDeps", "LogRing"]
