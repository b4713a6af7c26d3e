"""Residency: an engine keeps the last model it loaded for its next job (docs/engines.md)."""

from __future__ import annotations

import atexit
import threading
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, ClassVar, Generic, TypeVar

from studio_worker.engines.base import resident_files

K = TypeVar("K")
M = TypeVar("M")


class Residency(Generic[K, M]):
    """The residency half of the `Engine` port for an engine that keeps one model.

    The model is held with its key (its files and load options): a job whose key equals
    it finds the model loaded; another key frees it and loads anew. `_lock` serialises
    the engine's users of the model (a job, a preload, an unload).
    """

    free_at_exit: ClassVar[bool] = False
    """Free the model before interpreter teardown, while its native library can still be
    called (llama.cpp, stable-diffusion.cpp)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._held: tuple[K, M] | None = None
        self.loads = 0
        """How many times a model was loaded (a resident model is not loaded again)."""

    @property
    def _key(self) -> K | None:
        """The key of the resident model, if any."""
        return self._held[0] if self._held is not None else None

    def resident(self) -> list[str]:
        held = self._held
        return resident_files(self._files(held[0]) if held is not None else [])

    def unload(self) -> None:
        with self._lock:
            self._unload()

    def _files(self, key: K) -> Iterable[Path]:
        """The model files a key loads."""
        raise NotImplementedError

    def _close(self, model: M) -> None:
        """Free `model` now; by default it goes with its last reference."""

    def _unload(self) -> None:
        if self._held is not None:
            self._close(self._held[1])
        self._held = None

    def _hold(self, key: K, load: Callable[[], M]) -> M:
        """The model for `key`: the resident one, else what `load()` returns once the
        resident one is freed (nothing is held when it raises). Call it under `_lock`."""
        held = self._held
        if held is not None and held[0] == key:
            return held[1]
        self._unload()
        model = load()
        self._held = (key, model)
        if self.free_at_exit and self.loads == 0:
            atexit.register(_unload_at_exit, weakref.ref(self))
        self.loads += 1
        return model


def _unload_at_exit(ref: weakref.ref[Residency[Any, Any]]) -> None:
    engine = ref()
    if engine is not None:
        engine.unload()
