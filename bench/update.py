"""Benchmark: self-update of a live worker, from "update available" to the new version
connected, and the gap in job completions across the switch.

The setup of tests/platform/test_update_live.py (tests/platform/update_live.py): the
self-hosted studio in its own process, a TUF repository made by build/tuf_repo.py on a
loopback HTTP server, the worker started from `<root>/current/studio-worker` (a launcher
that runs this checkout as the release's version) under a restarting supervisor.

Two phases, each round publishing the next version (1.0.1, 1.0.2, …):

  * idle: publish, then trigger the check (`POST /daemon/update/install`, what
    `studio-worker update` sends; the automatic loop does the same once per
    `auto_update_interval_secs`). Timed: publishing (build/tuf_repo.py add, signing
    included), trigger -> install answered (check, download, verify, unpack, switch),
    trigger -> the studio lists the worker connected with the new `agentVersion`.
  * under load: a synthetic llm job submitted every --job-every seconds; trigger with
    `waitForJob` (the update takes the slot between two jobs). Timed, from the studio's
    `finishedAt` stamps: the gap between the last job finished by the old version and the
    first finished by the new one, next to the usual gap between two jobs.

With `--archive` (a release archive build/build.py made) every release is that build:
installed as its own version, then published again and again as the next versions
(`tuf_repo.py add --version`; one repack, reused). Its `agentVersion` is compiled in and
never changes, so "connected" is then the studio seeing the worker disconnect and connect
again after the trigger.

    .venv/bin/python bench/update.py [--rounds 5] [--job-every 0.05] [--archive PATH]
"""

from __future__ import annotations

import argparse
import itertools
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "platform"))

from update_live import ConnectionWatch, LiveRig, repack_once, tuf_repo, wait_for

LLM = {"messages": [{"role": "user", "content": "Name three dragons."}]}


def stamp(iso: str) -> float:
    return datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()


def new_connection(rig: LiveRig, watch: ConnectionWatch, new: str, since: float) -> float:
    """When the studio saw the new version connected: its agentVersion for launcher
    releases; for a built archive (one compiled version) a disconnection then a connection."""
    while True:
        if rig.feed.build is None:
            if rig.connected_as(new):
                return time.monotonic()
        else:
            at = watch.reconnected_after(since)
            if at is not None:
                return at
        if time.monotonic() - since > 60:
            raise AssertionError(f"{new} did not connect")
        time.sleep(0.005)


def idle_round(
    rig: LiveRig, watch: ConnectionWatch, old: str, new: str
) -> tuple[float, float, float]:
    t0 = time.monotonic()
    rig.feed.publish(new)
    published = time.monotonic() - t0
    t1 = time.monotonic()
    answer = rig.daemon_post("/daemon/update/install")
    installed = time.monotonic() - t1
    assert answer.json()["outcome"] == "installed", answer.text
    connected = new_connection(rig, watch, new, t1) - t1
    return published, installed, connected


def loaded_round(
    rig: LiveRig, watch: ConnectionWatch, new: str, every: float
) -> tuple[float, float, int]:
    """(switch gap, median gap between jobs, jobs) from the studio's finishedAt stamps."""
    rig.feed.publish(new)
    jobs: list[str] = []
    stop = threading.Event()

    def submit() -> None:
        while not stop.is_set():
            jobs.append(rig.studio.submit("llm", LLM))
            stop.wait(every)

    feeder = threading.Thread(target=submit, daemon=True)
    feeder.start()
    time.sleep(1.0)  # a steady stream first
    triggered = time.monotonic()
    answer = rig.daemon_post("/daemon/update/install", {"waitForJob": True}, timeout=120)
    assert answer.json()["outcome"] == "installed", answer.text
    new_connection(rig, watch, new, triggered)
    time.sleep(1.0)  # and after
    stop.set()
    feeder.join()
    finished = []
    for job_id in jobs:
        job = rig.studio.wait_job(job_id, 60)
        assert job["status"] == "done", job
        finished.append(stamp(job["finishedAt"]))
    finished.sort()
    gaps = [b - a for a, b in itertools.pairwise(finished)]
    return max(gaps), statistics.median(gaps), len(jobs)


def fmt(values: list[float]) -> str:
    ms = sorted(v * 1000 for v in values)
    return f"median {statistics.median(ms):7.0f} ms  (min {ms[0]:.0f}, max {ms[-1]:.0f})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--job-every", type=float, default=0.05, help="seconds between jobs")
    parser.add_argument("--archive", type=Path, help="a built release archive (build/build.py)")
    args = parser.parse_args()
    first = tuf_repo.parse_release_name(args.archive.name)[0] if args.archive else "1.0.0"
    with (
        tempfile.TemporaryDirectory(prefix="bench-update-") as tmp,
        repack_once(Path(tmp) / "repacked"),
    ):
        rig = LiveRig(Path(tmp), installed=first, build=args.archive)
        watch = ConnectionWatch(rig.studio_view)
        try:
            rig.start()
            rig.approve()
            rig.wait_connected(first)
            version = [int(part) for part in first.split("+")[0].split("-")[0].split(".")[:3]]

            def bump() -> tuple[str, str]:
                old = ".".join(map(str, version))
                version[2] += 1
                return old, ".".join(map(str, version))

            published, installed, connected = [], [], []
            for _ in range(args.rounds):
                p, i, c = idle_round(rig, watch, *bump())
                published.append(p)
                installed.append(i)
                connected.append(c)
            switch_gaps, usual_gaps, counts = [], [], []
            for _ in range(args.rounds):
                _, new = bump()
                g, u, n = loaded_round(rig, watch, new, args.job_every)
                switch_gaps.append(g)
                usual_gaps.append(u)
                counts.append(n)
            service = rig.service
            assert service is not None
            wait_for(lambda: len(service.starts) == 1, 1, "no restart by the supervisor")
        finally:
            watch.close()
            rig.close()
    releases = f"the build {args.archive.name}" if args.archive else "launcher releases"
    print(f"self-update, {args.rounds} rounds each (loopback, {releases}):")
    print(f"  publish (tuf_repo add + sign)          {fmt(published)}")
    if args.archive:
        print("    (the repack of the build done once, before the rounds, and reused)")
    print(f"  trigger -> installed (switch done)     {fmt(installed)}")
    print(f"  trigger -> new version connected       {fmt(connected)}")
    print(
        f"  under load (a job every {args.job_every * 1000:.0f} ms,"
        f" {min(counts)}-{max(counts)} jobs a round):"
    )
    print(f"    last job of old -> first of new      {fmt(switch_gaps)}")
    print(f"    usual gap between two jobs           {fmt(usual_gaps)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
