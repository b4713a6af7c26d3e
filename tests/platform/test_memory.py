"""platform/memory.py: which executable mappings are given back, and that giving them back
keeps their content (a real read-only file mapping in this process)."""

from __future__ import annotations

import mmap
import sys
from pathlib import Path

import pytest

from studio_worker.platform import memory

EXE = "/opt/studio-worker/0.5.0/studio-worker"
SMAPS = f"""\
00400000-00600000 r--p 00000000 fd:01 123 {EXE}
Size:               2048 kB
Rss:                1900 kB
Anonymous:             0 kB
00600000-00800000 r-xp 00200000 fd:01 123 {EXE}
Size:               2048 kB
Rss:                1000 kB
Anonymous:             0 kB
00800000-00810000 r--p 00400000 fd:01 123 {EXE}
Size:                 64 kB
Rss:                  64 kB
Anonymous:            64 kB
00810000-00820000 rw-p 00410000 fd:01 123 {EXE}
Size:                 64 kB
Rss:                  64 kB
Anonymous:            64 kB
00900000-00a00000 r--p 00000000 fd:01 124 /usr/lib/libc.so.6
Size:               1024 kB
Rss:                 900 kB
Anonymous:             0 kB
00b00000-00c00000 r--p 00000000 fd:01 123 {EXE}
Size:               1024 kB
Rss:                   0 kB
Anonymous:             0 kB
7ff000000000-7ff000100000 rw-p 00000000 00:00 0
Rss:                 100 kB
Anonymous:           100 kB
"""


def test_only_clean_read_only_resident_mappings_of_the_executable_qualify() -> None:
    # not: code (r-xp), relocated read-only data (copied on write: RELRO), writable data,
    # other files, mappings with nothing resident, anonymous memory
    assert memory.clean_readonly_mappings(SMAPS, EXE) == [memory.Mapping(0x400000, 0x600000, 1900)]
    assert memory.clean_readonly_mappings(SMAPS, "/elsewhere") == []
    assert memory.clean_readonly_mappings("", EXE) == []


def resident_kb(path: Path) -> int:
    smaps = Path("/proc/self/smaps").read_text()
    return sum(m.rss_kb for m in memory.clean_readonly_mappings(smaps, str(path)))


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux /proc and madvise")
def test_released_pages_leave_the_process_and_read_back_the_same(tmp_path: Path) -> None:
    blob = tmp_path / "blob"
    data = bytes(range(256)) * (8 * 1024 * 1024 // 256)  # 8 MiB
    blob.write_bytes(data)
    with blob.open("rb") as f:
        view = mmap.mmap(f.fileno(), 0, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
    try:
        assert view[:] == data  # every page read: resident
        assert resident_kb(blob) >= 7 * 1024
        released = memory.release_clean_pages(str(blob))
        assert released >= 7 * 1024
        assert resident_kb(blob) < 1024
        assert view[:] == data  # faulted back in from the file, unchanged
    finally:
        view.close()


def test_outside_the_compiled_binary_the_trim_loop_does_nothing() -> None:
    import asyncio

    assert not memory.compiled()
    asyncio.run(asyncio.wait_for(memory.trim_loop(), 1))  # returns at once
