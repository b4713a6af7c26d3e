"""One hypothesis profile for the fuzz suite: repeatable (derandomized, no example
database) and sized so the whole suite runs in well under 20 s on a small CI machine."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from hypothesis import HealthCheck, settings

T = TypeVar("T")

CALL_BUDGET_S = 0.5
"""No single decode/parse/guard call may take longer than this (no hang, no blow-up)."""


def fuzz(max_examples: int = 150) -> settings:
    return settings(
        max_examples=max_examples,
        deadline=2000,  # ms per example, generous for a loaded 2-core CI box
        derandomize=True,
        database=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    )


def timed(fn: Callable[..., T], *args: Any) -> T:
    """Call `fn`, asserting it returns (or raises) within CALL_BUDGET_S."""
    started = time.perf_counter()
    try:
        return fn(*args)
    finally:
        took = time.perf_counter() - started
        assert took < CALL_BUDGET_S, f"{getattr(fn, '__name__', fn)} took {took:.2f}s"
