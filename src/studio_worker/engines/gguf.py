"""The GGUF header: the trained context length, read before loading (to size the context)."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any, BinaryIO

_GGUF_MAGIC = b"GGUF"
# value type -> struct format of a scalar
_SCALARS = {
    0: "<B",
    1: "<b",
    2: "<H",
    3: "<h",
    4: "<I",
    5: "<i",
    6: "<f",
    7: "<?",
    10: "<Q",
    11: "<q",
    12: "<d",
}
_STRING, _ARRAY = 8, 9
_MAX_STRING = 1 << 30


class GgufError(ValueError):
    """The file is not a readable GGUF (truncated, corrupt, or another format)."""


def _read(f: BinaryIO, n: int) -> bytes:
    data = f.read(n)
    if len(data) != n:
        raise GgufError("unexpected end of file in the GGUF header (truncated download?)")
    return data


def _unpack(f: BinaryIO, fmt: str) -> Any:
    return struct.unpack(fmt, _read(f, struct.calcsize(fmt)))[0]


def _string(f: BinaryIO) -> str:
    n = _unpack(f, "<Q")
    if n > _MAX_STRING:
        raise GgufError(f"implausible string length {n} in the GGUF header")
    return _read(f, n).decode("utf-8", errors="replace")


def _value(f: BinaryIO, vtype: int) -> Any:
    if vtype in _SCALARS:
        return _unpack(f, _SCALARS[vtype])
    if vtype == _STRING:
        return _string(f)
    if vtype == _ARRAY:
        itype, count = _unpack(f, "<I"), _unpack(f, "<Q")
        if itype in _SCALARS:  # skip a fixed-size array without reading it
            f.seek(count * struct.calcsize(_SCALARS[itype]), 1)
        else:
            for _ in range(count):
                _value(f, itype)
        return None
    raise GgufError(f"unknown GGUF value type {vtype}")


def gguf_trained_context(path: Path) -> int | None:
    """`<arch>.context_length` from the GGUF header, None when absent.

    Reads only the key/value section up to that key; raises `GgufError` for a file that is
    not a complete GGUF header.
    """
    with path.open("rb") as f:
        if f.read(4) != _GGUF_MAGIC:
            raise GgufError("not a GGUF file (bad magic)")
        version = _unpack(f, "<I")
        if version < 2:
            raise GgufError(f"GGUF version {version} is not supported")
        _unpack(f, "<Q")  # tensor count
        kv_count = _unpack(f, "<Q")
        arch: str | None = None
        for _ in range(kv_count):
            key = _string(f)
            vtype = _unpack(f, "<I")
            value = _value(f, vtype)
            if key == "general.architecture" and isinstance(value, str):
                arch = value
            elif arch is not None and key == f"{arch}.context_length":
                return int(value)
    return None
