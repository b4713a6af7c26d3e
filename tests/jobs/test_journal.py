"""The crash-safe job journal: what a restarted worker owes the studio, and what not to send."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

from studio_worker.domain.results import BinaryResult
from studio_worker.jobs import journal as journal_module
from studio_worker.jobs.journal import RESTARTED_ERROR, HeldUpload, JobJournal
from studio_worker.protocol.frames import CompleteJson, Fail, LogBatch
from studio_worker.session.outbox import Outbox

RESULT = CompleteJson(job_id="job-1", result={"answer": 42}, prompt="q")


def restarted(folder: Path, **kw: Any) -> JobJournal:
    """A fresh journal on the same folder: what the next process of the worker sees."""
    return JobJournal(folder, **kw)


def entries(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir() if not p.name.startswith("."))


@pytest.mark.parametrize(
    ("write", "expected"),
    [
        (
            lambda j: j.running("job-1"),
            [Fail(job_id="job-1", error=RESTARTED_ERROR, retryable=True)],
        ),
        (lambda j: j.held(RESULT), [RESULT]),
        (
            lambda j: j.held(Fail(job_id="job-1", error="boom", retryable=False)),
            [Fail(job_id="job-1", error="boom", retryable=False)],
        ),
        (lambda j: (j.running("job-1"), j.done("job-1")), []),
    ],
    ids=["running", "held-result", "held-fail", "done"],
)
def test_what_a_restarted_worker_reports(write, expected, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    write(JobJournal(tmp_path))
    again = restarted(tmp_path)
    assert again.recover() == expected
    assert again.recover() == []  # once per process
    # a replayed frame is cleared like any other when it is handed to the socket
    for frame in expected:
        again.sending(frame)
    assert entries(tmp_path) == []


def test_entries_are_small_whole_files_and_leave_when_sent(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path)
    journal.running("job-1")
    (name,) = entries(tmp_path)
    entry = json.loads((tmp_path / name).read_text())
    assert entry == {"v": 1, "jobId": "job-1", "state": "running"}
    assert "job-1" not in name  # ids from the studio are hashed, never used as paths
    assert (tmp_path / name).stat().st_mode & 0o777 == 0o600  # results are the user's
    journal.held(RESULT)
    assert json.loads((tmp_path / name).read_text())["frame"]["type"] == "completeJson"
    journal.sending(RESULT)
    assert entries(tmp_path) == []
    journal.unsent(RESULT)  # the send failed: the copy is back
    assert restarted(tmp_path).recover() == [RESULT]
    journal.sending(LogBatch(entries=[]))  # not a job frame: ignored


def test_an_entry_older_than_the_studio_hold_is_set_aside_unsent(tmp_path: Path) -> None:
    JobJournal(tmp_path).held(RESULT)
    later = restarted(tmp_path, replay_window_s=20.0)
    (path,) = tmp_path.glob("*.json")
    old = time.time() - 21
    os.utime(path, (old, old))
    assert later.recover() == []
    assert entries(tmp_path) == []


def test_alive_stamps_the_entries_of_this_process(tmp_path: Path) -> None:
    now = [1000.0]
    journal = JobJournal(tmp_path, clock=lambda: now[0])
    journal.running("job-1")
    (path,) = tmp_path.glob("*.json")
    journal.alive()
    assert path.stat().st_mtime == 1000.0
    now[0] = 1000.5
    journal.alive()  # at most once a second
    assert path.stat().st_mtime == 1000.0
    now[0] = 1002.0
    journal.alive()
    assert path.stat().st_mtime == 1002.0
    # judged by the same clock after a restart: 19 s old is still owed, 21 s is not
    assert restarted(tmp_path, clock=lambda: 1021.0).recover() != []


def test_an_outcome_made_during_an_outage_is_stamped_with_the_last_contact(
    tmp_path: Path,
) -> None:
    now = [1000.0]
    journal = JobJournal(tmp_path, clock=lambda: now[0])
    journal.alive()  # the studio's last word
    journal.running("job-1")
    now[0] = 1100.0  # a long outage; the job ends meanwhile
    journal.held(RESULT)
    (path,) = tmp_path.glob("*.json")
    assert path.stat().st_mtime == 1000.0
    # the studio has taken the job back long ago: a restart now must not send it
    assert restarted(tmp_path, clock=lambda: 1101.0).recover() == []


@pytest.mark.parametrize(
    "content",
    [
        b"",
        b"{not json",
        b"\xff\xfe",
        b"[]",
        b'{"v":1,"jobId":"other","state":"running"}',
        b'{"v":1,"jobId":"job-1","state":"exploded"}',
        b'{"v":1,"jobId":"job-1","state":"held"}',
        b'{"v":1,"jobId":"job-1","state":"held","frame":{"type":"accept","jobId":"job-1"}}',
        b'{"v":1,"jobId":"job-1","state":"held","frame":{"type":"fail"}}',
    ],
)
def test_a_corrupt_entry_is_set_aside_never_a_crash(content: bytes, tmp_path: Path) -> None:
    JobJournal(tmp_path).running("job-1")
    (path,) = tmp_path.glob("*.json")
    path.write_bytes(content)
    JobJournal(tmp_path).running("job-2")
    later = restarted(tmp_path)
    assert later.recover() == [Fail(job_id="job-2", error=RESTARTED_ERROR, retryable=True)]
    assert path.with_suffix(".corrupt").exists()


def test_set_aside_entries_are_bounded(tmp_path: Path) -> None:
    for n in range(8):
        JobJournal(tmp_path).running(f"job-{n}")
    for path in tmp_path.glob("*.json"):
        path.write_bytes(b"junk")
    assert restarted(tmp_path).recover() == []
    assert len(list(tmp_path.glob("*.corrupt"))) == 4


def test_the_journal_is_bounded(tmp_path: Path) -> None:
    journal = JobJournal(tmp_path, max_entries=3)
    for n in range(5):
        journal.running(f"job-{n}")
        path = next(
            p for p in tmp_path.glob("*.json") if json.loads(p.read_text())["jobId"] == f"job-{n}"
        )
        os.utime(path, (1000.0 + n, 1000.0 + n))
    assert len(entries(tmp_path)) == 3


def test_an_unwritable_folder_costs_the_journal_not_the_job(tmp_path: Path) -> None:
    blocker = tmp_path / "jobs"
    blocker.write_text("a file where the folder should be")
    journal = JobJournal(blocker)
    journal.running("job-1")
    journal.held(RESULT)
    journal.alive()
    journal.sending(RESULT)
    assert journal.recover() == []


def test_an_upload_under_way_is_made_again_from_the_kept_bytes(tmp_path: Path) -> None:
    image = BinaryResult(b"\x89PNG...", "png")
    journal = JobJournal(tmp_path)
    journal.uploading("job-1", "a lantern", image)
    assert (tmp_path / next(tmp_path.glob("*.bin")).name).stat().st_mode & 0o777 == 0o600
    again = restarted(tmp_path)
    assert again.recover() == []  # never a `fail`: the upload may have landed
    assert again.take_uploads() == [HeldUpload("job-1", "a lantern", image)]
    assert again.take_uploads() == []
    again.done("job-1")
    assert entries(tmp_path) == []


def test_an_upload_whose_bytes_were_not_kept_sends_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(journal_module, "MAX_HELD_BYTES", 4)
    JobJournal(tmp_path).uploading("job-1", "a lantern", BinaryResult(b"too big", "png"))
    again = restarted(tmp_path)
    assert again.recover() == [] and again.take_uploads() == []
    assert entries(tmp_path) == []


def test_entries_of_another_registration_are_not_reported(tmp_path: Path) -> None:
    JobJournal(tmp_path, worker_id=lambda: "w-old").running("job-1")
    assert restarted(tmp_path, worker_id=lambda: "w-new").recover() == []
    assert entries(tmp_path) == []
    JobJournal(tmp_path, worker_id=lambda: "w-new").held(RESULT)
    assert restarted(tmp_path, worker_id=lambda: "w-new").recover() == [RESULT]


def test_a_result_too_big_to_keep_is_journaled_as_running(tmp_path: Path) -> None:
    huge = CompleteJson(job_id="job-1", result="x" * (2 * 1024 * 1024), prompt="q")
    JobJournal(tmp_path).held(huge)
    assert restarted(tmp_path).recover() == [
        Fail(job_id="job-1", error=RESTARTED_ERROR, retryable=True)
    ]


# ---- the outbox side ------------------------------------------------------------------


async def test_the_outbox_tells_the_ledger_before_each_send_and_after_a_failed_one(
    tmp_path: Path,
) -> None:
    journal = JobJournal(tmp_path)
    outbox = Outbox(journal)
    journal.held(RESULT)
    outbox.put(RESULT)

    async def broken(text: str) -> None:
        assert entries(tmp_path) == []  # cleared before the frame reaches the socket
        raise OSError("gone")

    with pytest.raises(OSError):
        await outbox.pump(broken)
    assert len(outbox) == 1 and len(entries(tmp_path)) == 1  # back in both


async def test_a_new_session_after_a_long_silence_drops_job_frames_the_studio_took_back(
    tmp_path: Path,
) -> None:
    now = [0.0]
    journal = JobJournal(tmp_path)
    outbox = Outbox(journal, hold_s=20.0, clock=lambda: now[0])
    assert outbox.welcomed() == []  # first session: nothing to judge
    outbox.contact()
    journal.held(RESULT)
    outbox.put(RESULT)
    outbox.put(LogBatch(entries=[]))
    now[0] = 15.0
    assert outbox.welcomed() == []  # a short outage: the studio still holds the job
    now[0] = 40.0
    assert outbox.welcomed() == [RESULT]
    assert len(outbox) == 1 and entries(tmp_path) == []


async def test_frames_owed_from_a_past_run_go_first(tmp_path: Path) -> None:
    JobJournal(tmp_path).running("old")
    outbox = Outbox(restarted(tmp_path))
    outbox.put(RESULT)
    outbox.welcomed()
    sent: list[str] = []

    async def send(text: str) -> None:
        sent.append(json.loads(text)["jobId"])
        if len(sent) == 2:
            raise OSError("stop")

    with pytest.raises(OSError):
        await outbox.pump(send)
    assert sent == ["old", "job-1"]
