"""Benchmark: the built binary against the Python package: start time, size, idle memory.

Prints, from one run, side by side:
  * start: wall time of `studio-worker --version`, the binary and `python -m studio_worker`
    run alternately (`--rounds` each; the first run of each is reported apart as the
    first start after the build, the median of the rest as the start);
  * size: the unpacked folder, the executable in it, and the release archive;
  * idle memory: resident set (VmRSS) of `studio-worker run` connected to a self-hosted
    studio on loopback, registered, approved, one synthetic job done (so the session is
    open), no model loaded, then idle for `--idle` seconds; the daemon's own process and
    its whole process tree (engine hosts included).

Targets (issue 5): start <= 0.3 s and <= the Python start; idle RSS <= 80 MB.

    .venv/bin/python build/build.py --engines none
    archive=$(.venv/bin/python build/build.py --archive-path --engines none)
    .venv/bin/python bench/startup.py --archive "$archive"
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path

from live import rss_mb, start_worker, tree
from studio_worker.studio.server import StudioServer

TARGET_START_S = 0.3
TARGET_RSS_MB = 80.0


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def time_once(command: list[str]) -> float:
    started = time.perf_counter()
    subprocess.run(command, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - started


def start_times(commands: dict[str, list[str]], rounds: int) -> dict[str, list[float]]:
    times: dict[str, list[float]] = {name: [] for name in commands}
    for _ in range(rounds + 1):  # alternate, so drift on a noisy machine hits both alike
        for name, command in commands.items():
            times[name].append(time_once(command))
    return times


async def idle_rss(command: list[str], idle_s: float) -> tuple[float, float, int]:
    """(daemon MB, tree MB, processes) of `command run` connected and idle."""
    work = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    studio = StudioServer(work / "studio")
    await studio.start()
    proc = await start_worker(studio, work, command)
    try:
        job = await studio.wait_for_job(
            studio.submit_job("llm", {"messages": [{"role": "user", "content": "hi"}]}), 60
        )
        if job.status != "done":
            raise SystemExit(f"{command[0]}: the first job did not complete: {job.error}")
        await asyncio.sleep(idle_s)
        pids = tree(proc.pid)
        return rss_mb(proc.pid), sum(rss_mb(p) for p in pids), len(pids)
    finally:
        proc.terminate()
        proc.wait(20)
        await studio.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--archive", type=Path, required=True, help="the built .tar.gz")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--idle", type=float, default=5.0, help="seconds idle before sampling")
    args = parser.parse_args()

    unpacked = Path(tempfile.mkdtemp(prefix="bench-startup-bin-"))
    with tarfile.open(args.archive) as tar:
        tar.extractall(unpacked, filter="data")
    (folder,) = list(unpacked.iterdir())
    exe = folder / ("studio-worker.exe" if sys.platform == "win32" else "studio-worker")
    binary = [str(exe)]
    package = [sys.executable, "-m", "studio_worker"]

    times = start_times(
        {"binary": [*binary, "--version"], "python": [*package, "--version"]}, args.rounds
    )
    first = {name: values[0] for name, values in times.items()}
    median = {name: statistics.median(values[1:]) for name, values in times.items()}
    print(f"start (`--version`, {args.rounds} alternating runs after a first one)")
    for name in times:
        rest = times[name][1:]
        print(
            f"  {name:<7} median {median[name] * 1000:6.0f} ms  min {min(rest) * 1000:6.0f} ms"
            f"  first {first[name] * 1000:6.0f} ms"
        )
    ratio = median["binary"] / median["python"]
    ok_start = median["binary"] <= TARGET_START_S and ratio <= 1.0
    print(
        f"  binary / python: {ratio:.2f}x; target <= {TARGET_START_S * 1000:.0f} ms and"
        f" <= python: {'met' if ok_start else 'NOT met'}"
    )

    print("size")
    entries = sum(1 for _ in folder.rglob("*"))
    print(f"  folder     {folder_bytes(folder) / 1e6:7.1f} MB ({entries} entries)")
    print(f"  executable {exe.stat().st_size / 1e6:7.1f} MB")
    print(f"  archive    {args.archive.stat().st_size / 1e6:7.1f} MB")

    print(f"idle memory (`run`, connected, one job done, {args.idle:.0f} s idle, no model)")
    results = {}
    for name, command in (("binary", binary), ("python", package)):
        own, whole, count = asyncio.run(idle_rss(command, args.idle))
        results[name] = own
        print(f"  {name:<7} daemon {own:6.1f} MB  process tree {whole:6.1f} MB ({count} processes)")
    ok_rss = results["binary"] <= TARGET_RSS_MB
    print(
        f"  binary / python: {results['binary'] / results['python']:.2f}x; target <="
        f" {TARGET_RSS_MB:.0f} MB: {'met' if ok_rss else 'NOT met'}"
    )


if __name__ == "__main__":
    main()
