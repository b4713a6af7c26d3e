"""Giving back the compiled binary's start-up pages (Linux).

The Nuitka build carries the bytecode of every library it bundles in the executable's
read-only data. Importing a module reads its part, and the kernel maps the pages around
each read as well, so by the time the daemon is up most of that blob (about 20 MB) is
mapped into the process and counted in its resident memory, although none of it is read
again once the imports are done. `python -m studio_worker` reads the same bytecode from
`.pyc` files through the page cache, which is not counted at all.

`release_clean_pages` drops those mappings with `madvise(MADV_DONTNEED)`. Only mappings of
the executable that are read-only and hold no private (written) page qualify, so what is
dropped is an exact copy of the file: a later read (a lazy import) faults it back in from
the page cache. Nothing happens outside the compiled binary or off Linux.
"""

from __future__ import annotations

import asyncio
import ctypes
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

MADV_DONTNEED = 4
TRIM_AFTER_S = (2.0, 30.0)
"""When the daemon gives the pages back after it starts: once its imports are done and
its session is up, once more after the first jobs' lazy imports; then every TRIM_EVERY_S."""
TRIM_EVERY_S = 600.0


def compiled() -> bool:
    """True inside the Nuitka-built binary (every compiled module has `__compiled__`)."""
    return "__compiled__" in globals()


@dataclass(frozen=True)
class Mapping:
    start: int
    end: int
    rss_kb: int


def clean_readonly_mappings(smaps: str, path: str) -> list[Mapping]:
    """The mappings of `path` in a /proc/<pid>/smaps text that are read-only, private and
    hold no anonymous (copied-on-write) page, with their resident size."""
    found: list[Mapping] = []
    current: tuple[int, int] | None = None
    rss = anonymous = 0

    def close() -> None:
        if current is not None and anonymous == 0 and rss > 0:
            found.append(Mapping(current[0], current[1], rss))

    for line in smaps.splitlines():
        head, _, rest = line.partition(" ")
        if "-" in head and not head.endswith(":"):  # a mapping's first line
            close()
            fields = rest.split(None, 4)
            perms = fields[0] if fields else ""
            name = fields[4].strip() if len(fields) > 4 else ""
            current = None
            rss = anonymous = 0
            if perms == "r--p" and name == path:
                low, _, high = head.partition("-")
                current = (int(low, 16), int(high, 16))
        elif current is not None and head == "Rss:":
            rss = int(rest.split()[0])
        elif current is not None and head == "Anonymous:":
            anonymous = int(rest.split()[0])
    close()
    return found


def release_clean_pages(path: str | None = None) -> int:
    """Drop the resident pages of the executable's clean read-only mappings; returns the
    kB released (0 off Linux or when nothing qualifies)."""
    if not sys.platform.startswith("linux"):
        return 0
    try:
        exe = path or os.readlink("/proc/self/exe")
        smaps = Path("/proc/self/smaps").read_text()
    except OSError:
        return 0
    libc = ctypes.CDLL(None, use_errno=True)  # the process's own symbols: libc's madvise
    libc.madvise.argtypes = (ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    released = 0
    for mapping in clean_readonly_mappings(smaps, exe):
        if libc.madvise(mapping.start, mapping.end - mapping.start, MADV_DONTNEED) == 0:
            released += mapping.rss_kb
    return released


async def trim_loop() -> None:
    """In the compiled binary: give back the start-up pages now and then (see above)."""
    if not compiled() or not sys.platform.startswith("linux"):
        return
    waits = [*TRIM_AFTER_S]
    while True:
        await asyncio.sleep(waits.pop(0) if waits else TRIM_EVERY_S)
        released = await asyncio.to_thread(release_clean_pages)
        log.debug("gave back %d kB of read-only executable pages", released)
