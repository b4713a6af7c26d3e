"""Whether an optional engine library is installed, without importing it.

Importing llama_cpp or faster_whisper loads native libraries and can take seconds; the
roster only needs to know that the package is there.
"""

from __future__ import annotations

import importlib.util


def installed(module: str) -> bool:
    """True when `module` can be imported here (found on the path), False otherwise."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        # A parent package that is missing or broken: the module cannot be imported.
        return False
