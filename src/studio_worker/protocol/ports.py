"""Ports the lower layers receive at construction instead of importing the session."""

from __future__ import annotations

from typing import Protocol

from studio_worker.domain.wire import WireModel


class FrameSink(Protocol):
    """Takes a frame for the studio. Frames wait across reconnects until sent."""

    def put(self, frame: WireModel) -> None: ...
