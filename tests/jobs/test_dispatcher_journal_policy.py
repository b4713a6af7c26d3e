"""What the dispatcher journals: jobs that run a while, not inline jobs answered at once.

An inline job (the engine answers in microseconds on the event loop) gets no entry: its
outcome is in the outbox before a crash could fall in between, and an outcome the outbox
cannot send is journaled by the outbox (`unsent`). A job run in a thread is journaled
`running` at its start and `held` with its outcome.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from synthetic_offers import claim, running_dispatcher

from studio_worker.domain.tasks import JobOfferClaim
from studio_worker.domain.wire import WireModel
from studio_worker.jobs.dispatcher import Dispatcher
from studio_worker.jobs.journal import JobJournal
from studio_worker.protocol.frames import Accept, CompleteJson, Fail


class RecordingJournal(JobJournal):
    """The real journal, recording each state it writes."""

    def __init__(self, folder: Path) -> None:
        super().__init__(folder)
        self.writes: list[tuple[str, str]] = []

    def running(self, job_id: str) -> None:
        self.writes.append(("running", job_id))
        super().running(job_id)

    def held(self, frame: CompleteJson | Fail) -> None:
        self.writes.append((f"held {frame.type}", frame.job_id))
        super().held(frame)


class Sink:
    def __init__(self) -> None:
        self.frames: list[WireModel] = []

    def put(self, frame: WireModel) -> None:
        self.frames.append(frame)


Parts = tuple[Dispatcher, Sink, RecordingJournal]


@pytest.fixture
async def parts(tmp_path: Path) -> AsyncIterator[Parts]:
    sink, journal = Sink(), RecordingJournal(tmp_path / "jobs")
    async with running_dispatcher(sink, journal=journal) as dispatcher:
        yield dispatcher, sink, journal


async def run_one(parts: Parts, offer: JobOfferClaim) -> None:
    dispatcher, sink, _ = parts
    assert dispatcher.consider(offer) == Accept(job_id=offer.job_id)
    dispatcher.start(offer)
    for _ in range(500):
        if any(getattr(f, "job_id", None) == offer.job_id for f in sink.frames):
            return
        await asyncio.sleep(0.01)
    raise AssertionError(f"no outcome for {offer.job_id}")


async def test_an_inline_job_writes_no_journal_entry(parts: Parts) -> None:
    _, sink, journal = parts
    await run_one(
        parts, claim("j-llm", {"kind": "llm", "messages": [{"role": "user", "content": "hi"}]})
    )
    assert isinstance(sink.frames[-1], CompleteJson)
    assert journal.writes == []
    assert not journal.tracks("j-llm")
    assert list(journal.folder.iterdir()) == []


async def test_a_job_run_in_a_thread_is_journaled_running_then_held(parts: Parts) -> None:
    _, sink, journal = parts
    # a tts result is a file to upload; with no studio link the job fails (retryable)
    await run_one(parts, claim("j-tts", {"kind": "audio_tts", "text": "hello"}))
    assert isinstance(sink.frames[-1], Fail)
    assert journal.writes == [("running", "j-tts"), ("held fail", "j-tts")]
    assert journal.tracks("j-tts")  # held until the outbox hands it to a socket


async def test_an_inline_outcome_the_outbox_could_not_send_is_journaled(parts: Parts) -> None:
    _, sink, journal = parts
    await run_one(parts, claim("j-stt", {"kind": "audio_stt", "inputUrl": "https://a/b.wav"}))
    frame = sink.frames[-1]
    assert isinstance(frame, CompleteJson)
    journal.unsent(frame)  # what the outbox does when the socket refuses the frame
    assert journal.tracks("j-stt")
    assert [p.suffix for p in journal.folder.iterdir()] == [".json"]
    journal.sending(frame)  # handed to the next socket: forgotten
    assert list(journal.folder.iterdir()) == []
