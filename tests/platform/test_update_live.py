"""Self-update of a live worker (update_live.py has the rig): a real studio process, a real
TUF repository on a loopback server, the daemon started from an installed layout by a
restarting supervisor, each release a launcher that runs this package as its version.

The update interval is a day here: each check is triggered through the daemon's local
API (`POST /daemon/update/install`, what `studio-worker update` sends), never by a clock.
"""

from __future__ import annotations

import json
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

pytest.importorskip("tufup", reason="self-update needs the `update` extra (tufup)")
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX launcher scripts")

from update_live import HOLD_PREFIX, LiveRig, wait_for  # noqa: E402

from studio_worker.platform import updater as up  # noqa: E402


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[LiveRig]:
    live = LiveRig(tmp_path)
    try:
        yield live
    finally:
        live.close()


def started(rig: LiveRig, version: str) -> None:
    rig.start()
    rig.approve()
    rig.wait_connected(version)


def test_v1_to_v2_detected_installed_reexecuted_and_the_studio_sees_v2(rig: LiveRig) -> None:
    started(rig, "1.0.0")
    pid = rig.service.proc.pid if rig.service and rig.service.proc else None

    checked = rig.cli("check-update")  # through the running daemon
    assert (checked.returncode, checked.stdout.strip()) == (0, "up to date: 1.0.0")

    rig.feed.publish("2.0.0")
    checked = rig.cli("check-update")
    assert (checked.returncode, checked.stdout.strip()) == (0, "update available: 1.0.0 -> 2.0.0")
    assert rig.current() == "1.0.0"  # a check never installs
    assert not (rig.root / "2.0.0").exists()

    answer = rig.daemon_post("/daemon/update/install")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["outcome"] == "installed"
    assert body["message"] == "update installed: 1.0.0 -> 2.0.0"

    view = rig.wait_connected("2.0.0")
    assert view["connected"]
    assert rig.current() == "2.0.0"
    assert (rig.root / "2.0.0" / up.HEALTHY_MARKER).exists()
    assert rig.service is not None and rig.service.proc is not None
    assert rig.service.proc.pid == pid  # re-exec: the same process became 2.0.0
    assert len(rig.service.starts) == 1  # ... not a restart by the supervisor

    status = rig.cli("status", "--json")
    update = json.loads(status.stdout)["update"]
    assert update["current"] == "2.0.0"
    assert update["lastCheck"]["outcome"] == "installed"
    assert update["lastCheck"]["latest"] == "2.0.0"

    again = rig.cli("check-update")
    assert (again.returncode, again.stdout.strip()) == (0, "up to date: 2.0.0")
    shipped = [entry["message"] for entry in rig.studio_logs()]
    assert "update 2.0.0 installed; restarting into it" in shipped, shipped


def test_an_update_during_a_job_waits_for_it_and_the_result_is_delivered(
    rig: LiveRig, tmp_path: Path
) -> None:
    started(rig, "1.0.0")
    release = tmp_path / "release-the-job"
    task = {"prompt": f"{HOLD_PREFIX}{release}", "ext": "png", "width": 64, "height": 64}
    job_id = rig.studio.submit("image", task)
    wait_for(
        lambda: (rig.studio_view() or {}).get("currentJobId") == job_id,
        30,
        "the worker to hold the job",
    )
    rig.feed.publish("2.0.0")

    refused = rig.daemon_post("/daemon/update/install")  # `studio-worker update`
    assert refused.status_code == 409
    assert "a job is running" in refused.json()["message"]
    cli = rig.cli("update")
    assert cli.returncode == 1
    assert "a job is running" in cli.stderr

    answers: list[httpx.Response] = []
    waiting = threading.Thread(
        target=lambda: answers.append(
            rig.daemon_post("/daemon/update/install", {"waitForJob": True}, timeout=120)
        ),
        daemon=True,
    )
    waiting.start()
    service = rig.service
    assert service is not None
    wait_for(
        lambda: "update 2.0.0 ready; waiting for the running job to end" in service.log,
        60,
        "the downloaded update to wait for the job",
    )
    assert rig.current() == "1.0.0"
    assert rig.studio.get(f"/admin/jobs/{job_id}")["status"] in ("offered", "running")
    assert rig.connected_as("1.0.0")

    release.touch()
    job = rig.studio.wait_job(job_id, 60)
    assert job["status"] == "done", job
    assert rig.studio.admin.get(f"/admin/jobs/{job_id}/result").content[:8] == b"\x89PNG\r\n\x1a\n"

    waiting.join(60)
    assert answers and answers[0].status_code == 200, answers
    assert answers[0].json()["outcome"] == "installed"
    rig.wait_connected("2.0.0")
    after = rig.studio.submit("image", {"prompt": "after", "ext": "png", "width": 64, "height": 64})
    assert rig.studio.wait_job(after, 60)["status"] == "done"
    log = service.log
    assert log.index("waiting for the running job to end") < log.index("booting: version=2.0.0")


def test_a_v3_that_crashes_at_start_rolls_back_to_v2_and_the_studio_is_told(
    tmp_path: Path,
) -> None:
    rig = LiveRig(tmp_path, installed="2.0.0")
    try:
        started(rig, "2.0.0")
        rig.feed.publish("3.0.0", crash=True)
        answer = rig.daemon_post("/daemon/update/install")
        assert answer.json()["outcome"] == "installed", answer.text

        # 3.0.0 crashes at each start; the supervisor restarts `current` (the service's
        # Restart=on-failure) until its start count is spent, then boot() switches back.
        service = rig.service
        assert service is not None
        wait_for(
            lambda: len(service.exits) >= up.MAX_UNHEALTHY_STARTS and rig.current() == "2.0.0",
            120,
            "the crashed starts of 3.0.0 and the switch back",
        )
        rig.wait_connected("2.0.0", timeout=60)
        assert rig.current() == "2.0.0"
        assert service.exits.count(1) == up.MAX_UNHEALTHY_STARTS, service.exits
        assert service.log.count("RuntimeError: release 3.0.0 is broken") == up.MAX_UNHEALTHY_STARTS
        state = up.load_state(rig.root / up.UPDATE_DIR / up.STATE_FILE)
        assert state.bad == ("3.0.0",)
        assert state.pending is None

        line = (
            f"update 3.0.0 rolled back to 2.0.0: not healthy after {up.MAX_UNHEALTHY_STARTS} starts"
        )
        wait_for(
            lambda: any(line in entry["message"] for entry in rig.studio_logs()),
            30,
            "the rollback in the studio's log of this worker",
        )
        checked = rig.cli("check-update")
        assert checked.returncode == 0
        assert checked.stdout.startswith("update 3.0.0 skipped: it was rolled back on this worker")
    finally:
        rig.close()


def test_without_a_daemon_the_commands_run_the_updater_in_process(rig: LiveRig) -> None:
    checked = rig.cli("check-update")
    assert (checked.returncode, checked.stdout.strip()) == (0, "up to date: 1.0.0")
    rig.feed.publish("2.0.0")

    installed = rig.cli("update", "--json")
    assert installed.returncode == 0, installed.stderr
    body = json.loads(installed.stdout)
    assert body["outcome"] == "installed"
    assert body["message"] == "update installed: 1.0.0 -> 2.0.0; it runs from the next start"
    assert rig.current() == "2.0.0"
    assert (rig.root / "2.0.0" / up.EXE_NAME).exists()

    status = rig.cli("status")
    line = next(x for x in status.stdout.splitlines() if x.startswith("last_update_check: "))
    assert line.endswith(": update installed: 1.0.0 -> 2.0.0")
    version = rig.cli("--version")
    assert version.stdout.startswith("studio-worker 2.0.0")


def test_a_refused_check_is_reported_with_a_non_zero_exit(rig: LiveRig) -> None:
    rig.feed.publish("2.0.0")
    timestamp = rig.feed.repo / "metadata" / "timestamp.json"
    signed = json.loads(timestamp.read_text())
    signed["signed"]["version"] += 1  # the signature no longer matches
    timestamp.write_text(json.dumps(signed))

    checked = rig.cli("check-update")
    assert checked.returncode == 1
    assert checked.stderr.startswith("refused: metadata signature check failed"), checked.stderr
    assert rig.current() == "1.0.0"
