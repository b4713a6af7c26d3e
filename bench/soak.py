"""Soak: 10 000 synthetic jobs through a worker process and the self-hosted studio.

The real pipeline (the studio's SQLite store on disk, the real `studio-worker run` process,
real frames on loopback), every kind in turn (llm, audio_stt, audio_tts, image, video),
submitted in batches. After each batch it samples the worker's resident memory (VmRSS of
the daemon and of its whole process tree) and, through the worker's local API, the sizes
of what must stay bounded: the log ring (`/daemon/logs`) and the recent-jobs list
(`/daemon/status`). At the end it checks, and exits 1 when any check fails:

  * 0 jobs lost: every submitted job is `done` at the studio, none failed or left queued;
  * RSS flat: after the warm-up (the first `--warmup` jobs), no sample is more than 10%
    above the first post-warm-up sample, and neither is the last one;
  * the ring, the recent jobs and the studio's stored log lines for the worker stay at or
    under their caps.

    .venv/bin/python bench/soak.py [--jobs 10000] [--batch 500] [--warmup 1000]
    .venv/bin/python bench/soak.py --worker path/to/studio-worker     # soak the binary

BENCH_WORKER_STDERR=1 shows the worker's log instead of discarding it.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

from live import rss_mb, start_worker, tree
from studio_worker.localapi.logring import LOG_RING_CAP
from studio_worker.status.store import RECENT_JOBS_CAP
from studio_worker.studio.server import StudioServer

KINDS: list[tuple[str, dict[str, Any]]] = [
    ("llm", {"messages": [{"role": "user", "content": "Name three dragons."}]}),
    ("audio_stt", {"inputUrl": "https://assets.example/a.wav"}),
    ("audio_tts", {"text": "hello there"}),
    ("image", {"prompt": "a lantern", "ext": "png", "width": 64, "height": 64}),
    ("video", {"prompt": "a fox", "seconds": 1, "fps": 4, "width": 64, "height": 64}),
]
RSS_GROWTH_LIMIT = 0.10
STUDIO_LOG_CAP = 10_000  # StudioServer's default log_cap


class Sample:
    def __init__(self, done: int, elapsed: float, own: float, whole: float, ring: int, recent: int):
        self.done, self.elapsed, self.own, self.whole = done, elapsed, own, whole
        self.ring, self.recent = ring, recent


def local_api(config_dir: Path) -> httpx.AsyncClient:
    discovery = json.loads((config_dir / "local-api.json").read_text())
    return httpx.AsyncClient(
        base_url=discovery["url"],
        headers={"Authorization": f"Bearer {discovery['token']}"},
        timeout=10,
    )


async def soak(jobs: int, batch: int, warmup: int, command: list[str]) -> int:
    work = Path(tempfile.mkdtemp(prefix="bench-soak-"))
    studio = StudioServer(work / "studio", log_cap=STUDIO_LOG_CAP)
    await studio.start()
    worker = await start_worker(studio, work, command, extra_config="local_api_port = 0\n")
    samples: list[Sample] = []
    submitted: list[str] = []
    try:
        first = await studio.wait_for_job(studio.submit_job(*KINDS[0]), 60)
        if first.status != "done":
            raise SystemExit(f"the first job did not complete: {first.error}")
        api = local_api(work / "worker")
        started = time.perf_counter()
        while len(submitted) < jobs:
            ids = [
                studio.submit_job(*KINDS[(len(submitted) + i) % len(KINDS)])
                for i in range(min(batch, jobs - len(submitted)))
            ]
            submitted.extend(ids)
            for job_id in ids:
                await studio.wait_for_job(job_id, 120)
            logs = (await api.get("/daemon/logs", params={"after": 0})).json()["entries"]
            status = (await api.get("/daemon/status")).json()
            pids = tree(worker.pid)
            samples.append(
                Sample(
                    len(submitted),
                    time.perf_counter() - started,
                    rss_mb(worker.pid),
                    sum(rss_mb(p) for p in pids),
                    len(logs),
                    len(status["recentJobs"]),
                )
            )
            s = samples[-1]
            print(
                f"  {s.done:>6} jobs  {s.elapsed:7.1f} s  daemon {s.own:6.1f} MB"
                f"  tree {s.whole:6.1f} MB  ring {s.ring:>4}  recent {s.recent:>3}",
                flush=True,
            )
        await api.aclose()
        elapsed = time.perf_counter() - started
        by_status: dict[str, int] = {}
        for job_id in submitted:
            record = studio.get_job(job_id)
            state = record.status if record is not None else "missing"
            by_status[str(state)] = by_status.get(str(state), 0) + 1
        worker_id = studio.workers()[0]["workerId"]
        studio_logs = len(studio.worker_logs(worker_id, limit=1_000_000))
    finally:
        worker.terminate()
        worker.wait(20)
        await studio.stop()

    steady = [s for s in samples if s.done > warmup] or samples
    base = steady[0]
    peak = max(steady, key=lambda s: s.own)
    growth_last = steady[-1].own / base.own - 1
    growth_peak = peak.own / base.own - 1
    done = by_status.get("done", 0)
    checks = {
        f"0 jobs lost ({done}/{jobs} done; {by_status})": done == jobs,
        f"daemon RSS flat within 10% after {warmup} jobs (last {growth_last:+.1%},"
        f" peak {growth_peak:+.1%} at {peak.done})": max(growth_last, growth_peak)
        <= RSS_GROWTH_LIMIT,
        f"log ring <= {LOG_RING_CAP} (max {max(s.ring for s in samples)})": max(
            s.ring for s in samples
        )
        <= LOG_RING_CAP,
        f"recent jobs <= {RECENT_JOBS_CAP} (max {max(s.recent for s in samples)})": max(
            s.recent for s in samples
        )
        <= RECENT_JOBS_CAP,
        f"studio log lines stored for the worker <= {STUDIO_LOG_CAP} ({studio_logs})": studio_logs
        <= STUDIO_LOG_CAP,
    }
    print(
        f"{jobs} jobs in {elapsed:.1f} s ({jobs / elapsed:.0f} jobs/s); daemon RSS"
        f" {base.own:.1f} MB after warm-up -> {steady[-1].own:.1f} MB at the end;"
        f" process tree {base.whole:.1f} -> {steady[-1].whole:.1f} MB"
    )
    for text, ok in checks.items():
        print(f"  [{'ok' if ok else 'FAIL'}] {text}")
    return 0 if all(checks.values()) else 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=1000)
    parser.add_argument("--worker", type=Path, help="a built studio-worker executable")
    args = parser.parse_args()
    command = [str(args.worker)] if args.worker else [sys.executable, "-m", "studio_worker"]
    print(f"soak: {args.jobs} jobs in batches of {args.batch}, worker: {' '.join(command)}")
    sys.exit(asyncio.run(soak(args.jobs, args.batch, args.warmup, command)))


if __name__ == "__main__":
    main()
