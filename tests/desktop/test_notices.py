"""Which status changes become notifications, the rate limits, and failure logging."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from studio_worker.config.ui_prefs import UiPrefs
from studio_worker.desktop.notices import (
    GLOBAL_CAP,
    KIND_INTERVAL_S,
    Notice,
    NoticeKind,
    Notifier,
    RateLimiter,
    notices_between,
    switch_notice,
    update_notice,
)
from studio_worker.platform.updater import (
    InstallLayout,
    Pending,
    UpdateState,
    rolled_back,
    save_state,
)
from studio_worker.protocol.outcomes import SessionState
from studio_worker.status.store import Snapshot

from .snapshots import job, snap

PENDING = {"state": "pending", "requestId": "r1", "since": "t"}
REJECTED = {"state": "rejected", "reason": "not on my studio"}
BOTH = UiPrefs(notify_on_completion=True, notify_on_failure=True)


def kinds(prev: Snapshot, cur: Snapshot, prefs: UiPrefs = BOTH) -> list[NoticeKind]:
    return [n.kind for n in notices_between(prev, cur, prefs)]


@pytest.mark.parametrize(
    ("prev", "cur", "expected"),
    [
        (snap(registration=PENDING), snap(), [NoticeKind.APPROVED]),
        # a saved approval loaded at start is not news
        (snap(registration={"state": "pristine"}), snap(), []),
        (snap(), snap(), []),
        (snap(registration=PENDING), snap(registration=REJECTED), [NoticeKind.REJECTED]),
        (snap(registration=REJECTED), snap(registration=REJECTED), []),
        (
            snap(),
            snap(session_state=SessionState.AUTH_FAILED, session_reason="token revoked"),
            [NoticeKind.AUTH_FAILED],
        ),
        (
            snap(session_state=SessionState.AUTH_FAILED),
            snap(session_state=SessionState.AUTH_FAILED),
            [],
        ),
        (snap(session_state=SessionState.RECONNECTING), snap(), []),
        (
            snap(current_job=job("a")),
            snap(recent_jobs=(job("a", "completed"),)),
            [NoticeKind.JOB_COMPLETED],
        ),
        (
            snap(current_job=job("a")),
            snap(recent_jobs=(job("a", "failed", "out of memory"),)),
            [NoticeKind.JOB_FAILED],
        ),
        # already seen jobs are not repeated
        (
            snap(recent_jobs=(job("a", "failed"),)),
            snap(recent_jobs=(job("b", "completed"), job("a", "failed"))),
            [NoticeKind.JOB_COMPLETED],
        ),
        (
            snap(recent_jobs=(job("b", "completed"), job("a", "failed"))),
            snap(recent_jobs=(job("b", "completed"), job("a", "failed"))),
            [],
        ),
    ],
)
def test_notices_between(prev: Snapshot, cur: Snapshot, expected: list[NoticeKind]) -> None:
    assert kinds(prev, cur) == expected


@pytest.mark.parametrize(
    ("prefs", "expected"),
    [
        (UiPrefs(), []),  # both off by default (behaviour §12.7)
        (UiPrefs(notify_on_completion=True), [NoticeKind.JOB_COMPLETED]),
        (UiPrefs(notify_on_failure=True), [NoticeKind.JOB_FAILED]),
        (BOTH, [NoticeKind.JOB_FAILED, NoticeKind.JOB_COMPLETED]),
    ],
)
def test_job_notices_follow_the_window_prefs(prefs: UiPrefs, expected: list[NoticeKind]) -> None:
    cur = snap(
        recent_jobs=(job("b", "completed"), job("a", "failed", "oom")),
        registration={"state": "approved"},
    )
    assert kinds(snap(), cur, prefs) == expected
    # the other notices do not depend on them
    approved = [NoticeKind.APPROVED, *expected]
    assert kinds(snap(registration=PENDING), cur, prefs) == approved


def test_notice_texts() -> None:
    done = notices_between(snap(), snap(recent_jobs=(job("a", "completed"),)), BOTH)
    assert done == [
        Notice(NoticeKind.JOB_COMPLETED, "studio-worker — job completed", "image · sd-tiny")
    ]
    failed = notices_between(
        snap(), snap(recent_jobs=(job("a", "failed", "engine crashed"),)), BOTH
    )
    assert failed == [
        Notice(
            NoticeKind.JOB_FAILED,
            "studio-worker — job failed",
            "image · sd-tiny — engine crashed",
        )
    ]
    (rejected,) = notices_between(snap(registration=PENDING), snap(registration=REJECTED))
    assert rejected.title == "studio-worker — registration rejected"
    assert rejected.body.startswith("not on my studio. ")
    assert "register --reset" in rejected.body
    (auth,) = notices_between(
        snap(), snap(session_state=SessionState.AUTH_FAILED, session_reason="token revoked")
    )
    assert auth.body.startswith("token revoked. Re-register")


def test_several_failures_in_one_step_come_oldest_first() -> None:
    cur = snap(recent_jobs=(job("new", "failed", "two"), job("old", "failed", "one")))
    bodies = [n.body for n in notices_between(snap(), cur, BOTH)]
    assert bodies == ["image · sd-tiny — one", "image · sd-tiny — two"]


def test_switch_notice() -> None:
    installed = UpdateState(pending=Pending(version="1.1.0", previous="1.0.0", switched_at=1.0))
    notice = switch_notice("1.0.0", installed)
    assert notice is not None and notice.kind is NoticeKind.UPDATE_INSTALLED
    assert "1.1.0" in notice.body
    rolled = UpdateState(
        rollback={"from": "1.1.0", "to": "1.0.0", "reason": "not healthy", "reported": False}
    )
    notice = switch_notice("1.1.0", rolled)
    assert notice is not None and notice.kind is NoticeKind.UPDATE_ROLLED_BACK
    assert notice.body == "Version 1.1.0 was rolled back to 1.0.0: not healthy."
    assert switch_notice("1.0.0", rolled) is None  # an old record about another version
    assert switch_notice("1.0.0", UpdateState()) is None


def test_rate_limiter_spaces_each_kind() -> None:
    limiter = RateLimiter(per_kind_s=60, cap=100, window_s=600)
    assert limiter.allow(NoticeKind.JOB_FAILED, 0)
    assert not limiter.allow(NoticeKind.JOB_FAILED, 59.9)
    assert limiter.allow(NoticeKind.APPROVED, 1)  # other kinds are not held back
    assert limiter.allow(NoticeKind.JOB_FAILED, 60)
    assert not limiter.allow(NoticeKind.JOB_FAILED, 61)


def test_rate_limiter_caps_all_kinds_over_the_window() -> None:
    limiter = RateLimiter(per_kind_s=0, cap=3, window_s=100)
    assert [limiter.allow(NoticeKind.JOB_FAILED, t) for t in (0, 1, 2, 3)] == [
        True,
        True,
        True,
        False,
    ]
    assert not limiter.allow(NoticeKind.APPROVED, 99)
    assert limiter.allow(NoticeKind.APPROVED, 100)  # the first one left the window
    assert not limiter.allow(NoticeKind.APPROVED, 100.5)


def test_defaults_are_sane() -> None:
    assert KIND_INTERVAL_S >= 10
    assert GLOBAL_CAP >= 1


def test_notifier_sends_in_order_and_rate_limits() -> None:
    sent: list[tuple[str, str]] = []
    now = [0.0]
    notifier = Notifier(
        lambda title, body: sent.append((title, body)) is None, clock=lambda: now[0]
    )
    assert notifier.post(Notice(NoticeKind.JOB_FAILED, "t1", "b1"))
    assert not notifier.post(Notice(NoticeKind.JOB_FAILED, "t2", "b2"))  # same kind, too soon
    assert notifier.post(Notice(NoticeKind.APPROVED, "t3", "b3"))
    notifier.close()
    assert sent == [("t1", "b1"), ("t3", "b3")]


def test_a_failing_sender_is_logged_once_and_the_notifier_carries_on(
    caplog: pytest.LogCaptureFixture,
) -> None:
    calls: list[str] = []

    def refuse(title: str, body: str) -> bool:
        calls.append(title)
        if len(calls) == 2:
            raise OSError("dbus went away")
        return False

    notifier = Notifier(refuse, limiter=RateLimiter(per_kind_s=0))
    caplog.set_level(logging.DEBUG, logger="studio_worker.desktop.notices")
    for n in range(3):
        notifier.post(Notice(NoticeKind.JOB_FAILED, f"t{n}", "b"))
    notifier.close()
    assert calls == ["t0", "t1", "t2"]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "desktop notifications are unavailable" in warnings[0].getMessage()


def test_update_notice_reads_the_install_state(tmp_path: Path) -> None:
    layout = InstallLayout(root=tmp_path, version="1.0.0")
    assert update_notice("not an install") is None
    assert update_notice(layout) is None  # no state file yet
    layout.state_path.parent.mkdir(parents=True)
    pending = Pending(version="1.1.0", previous="1.0.0", switched_at=1.0)
    save_state(layout.state_path, UpdateState(pending=pending))
    notice = update_notice(layout)
    assert notice is not None and notice.kind is NoticeKind.UPDATE_INSTALLED
    rolled = rolled_back(UpdateState(pending=pending), "not healthy", 2.0)
    save_state(layout.state_path, rolled)
    back = update_notice(InstallLayout(root=tmp_path, version="1.1.0"))
    assert back is not None and back.kind is NoticeKind.UPDATE_ROLLED_BACK
    assert back.body == "Version 1.1.0 was rolled back to 1.0.0: not healthy."
