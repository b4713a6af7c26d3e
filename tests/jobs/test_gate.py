"""The one-job gate: compare-and-swap reservation and the queued next holder."""

from __future__ import annotations

import threading

from studio_worker.jobs.gate import JobGate


def test_one_holder_at_a_time() -> None:
    gate = JobGate()
    assert gate.try_reserve("job-1")
    assert gate.busy and gate.holder == "job-1"
    assert not gate.try_reserve("job-2")
    gate.release("job-2")  # not the holder: nothing happens
    assert gate.holder == "job-1"
    gate.release("job-1")
    assert not gate.busy
    assert gate.try_reserve("job-2")


def test_reserve_next_takes_a_free_gate_at_once() -> None:
    gate = JobGate()
    assert gate.reserve_next("update")
    assert gate.holder == "update" and gate.next_holder is None


def test_the_queued_next_holder_gets_the_gate_before_any_newcomer() -> None:
    gate = JobGate()
    assert gate.try_reserve("job-1")
    assert not gate.reserve_next("update")
    assert gate.next_holder == "update"
    # While the update is queued, a new offer is refused even in the instant of a release.
    assert not gate.try_reserve("job-2")
    gate.release("job-1")
    assert gate.holder == "update" and gate.next_holder is None
    assert not gate.try_reserve("job-2")
    assert gate.reserve_next("update")  # polling again reports that it holds the gate
    gate.release("update")
    assert gate.try_reserve("job-2")


def test_only_one_next_holder_and_cancel() -> None:
    gate = JobGate()
    gate.try_reserve("job-1")
    assert not gate.reserve_next("update")
    assert not gate.reserve_next("other")  # the queue holds one: `other` is not queued
    assert gate.next_holder == "update"
    gate.cancel_next("other")
    assert gate.next_holder == "update"
    gate.cancel_next("update")
    assert gate.next_holder is None
    gate.release("job-1")
    assert not gate.busy  # nobody queued: the gate is simply free
    assert gate.try_reserve("job-2")


def test_a_queued_holder_may_still_take_a_free_gate_with_try_reserve() -> None:
    gate = JobGate()
    gate.try_reserve("job-1")
    gate.reserve_next("update")
    gate.cancel_next("update")
    gate.release("job-1")
    assert gate.try_reserve("update")


def test_back_to_back_jobs_cannot_starve_the_next_holder() -> None:
    """Jobs that re-reserve the instant they release: the queued holder still gets in."""
    gate = JobGate()
    stop = threading.Event()
    jobs_after_queue: list[int] = []

    def jobs() -> None:
        n = 0
        while not stop.is_set():
            if gate.try_reserve(f"job-{n}"):
                if gate.next_holder == "update":
                    jobs_after_queue.append(n)
                gate.release(f"job-{n}")
                n += 1

    worker = threading.Thread(target=jobs)
    worker.start()
    try:
        while not gate.reserve_next("update"):
            if gate.holder == "update":
                break
            threading.Event().wait(0.001)
        assert gate.holder == "update"
    finally:
        stop.set()
        worker.join(5)
    # At most the job that held the gate when the update queued ran after it queued.
    assert len(jobs_after_queue) <= 1
