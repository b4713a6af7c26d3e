"""One hypothesis profile for the fuzz suite: repeatable (derandomized, no example
database) and sized so the whole suite runs in well under 20 s on a small CI machine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings

T = TypeVar("T")

CALL_BUDGET_S = 2.0
"""No single decode/parse/guard call may spend more CPU than this (no hang, no blow-up).

CPU time of the calling thread, not wall time: other work on a shared CI machine delays a
call without making it spend more; a quadratic blow-up or a hang spends far more than
this (a 2 MB flat frame decodes in about 0.1 s of CPU)."""


def fuzz(max_examples: int = 150) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=2000,  # ms per example, generous for a loaded 2-core CI box
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def timed(fn: Callable[..., T], *args: Any) -> T:
    """Call `fn`, asserting it returns (or raises) within CALL_BUDGET_S of CPU."""
    started = time.thread_time()
    try:
        return fn(*args)
    finally:
        took = time.thread_time() - started
        assert took < CALL_BUDGET_S, f"{getattr(fn, '__name__', fn)} spent {took:.2f}s of CPU"
