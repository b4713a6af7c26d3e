"""Desktop notifications: which events deserve one, how often, and the sending thread.

Events are derived, not reported: `notices_between` compares two status-board snapshots
(approval granted or rejected, studio auth failed, a job completed or failed — those two
only when the operator asked for them in `ui.toml`, behaviour §12.7) and `switch_notice`
reads the updater's state when the daemon hands back a restart (update installed or
rolled back). So no part of the daemon calls a notification API; the tray's watch loop
feeds what these return to one `Notifier`, which rate-limits (`RateLimiter`, pure) and
sends on its own thread. A sender that fails (notify-py returns False without a
notification service) is logged once; the worker carries on.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

from studio_worker.config.ui_prefs import UiPrefs
from studio_worker.platform.updater import InstallLayout, UpdateState, load_state
from studio_worker.protocol.outcomes import AUTH_FAILED_HINT, SessionState
from studio_worker.status.store import Snapshot

log = logging.getLogger(__name__)

APP_NAME = "studio-worker"
KIND_INTERVAL_S = 60.0
"""At most one notice of a kind per minute (a burst of failed jobs shows once)."""
GLOBAL_CAP = 6
GLOBAL_WINDOW_S = 600.0
"""And at most six notices of any kind in ten minutes."""
CLOSE_GRACE_S = 5.0


class NoticeKind(StrEnum):
    APPROVED = "approved"
    REJECTED = "rejected"
    AUTH_FAILED = "auth_failed"
    UPDATE_INSTALLED = "update_installed"
    UPDATE_ROLLED_BACK = "update_rolled_back"
    JOB_FAILED = "job_failed"
    JOB_COMPLETED = "job_completed"


@dataclass(frozen=True, slots=True)
class Notice:
    kind: NoticeKind
    title: str
    body: str


def _title(what: str) -> str:
    return f"{APP_NAME} — {what}"


def notices_between(prev: Snapshot, cur: Snapshot, prefs: UiPrefs | None = None) -> list[Notice]:
    """The notices that going from `prev` to `cur` calls for, in a fixed order. A finished
    job is one only when `prefs` asks for it (`notify_on_completion`, `notify_on_failure`;
    both off by default)."""
    prefs = prefs or UiPrefs()
    out: list[Notice] = []
    was, now = prev.registration.get("state"), cur.registration.get("state")
    if was == "pending" and now == "approved":
        # not pristine -> approved: that is a saved approval loaded at start
        out.append(
            Notice(
                NoticeKind.APPROVED,
                _title("approved"),
                "The studio approved this worker; it now takes jobs.",
            )
        )
    if now == "rejected" and was != "rejected":
        reason = cur.registration.get("reason") or "no reason given"
        out.append(
            Notice(
                NoticeKind.REJECTED,
                _title("registration rejected"),
                f"{reason}. Reset the registration in the dashboard, or run "
                "`studio-worker register --reset`.",
            )
        )
    if (
        cur.session_state is SessionState.AUTH_FAILED
        and prev.session_state is not SessionState.AUTH_FAILED
    ):
        reason = cur.session_reason or "the studio refused the worker's token"
        out.append(
            Notice(
                NoticeKind.AUTH_FAILED,
                _title("studio auth failed"),
                f"{reason}. {AUTH_FAILED_HINT}",
            )
        )
    if not (prefs.notify_on_completion or prefs.notify_on_failure):
        return out
    seen = {job.job_id for job in prev.recent_jobs}
    for job in reversed(cur.recent_jobs):  # oldest first
        if job.job_id in seen:
            continue
        if job.outcome == "failed" and prefs.notify_on_failure:
            reason = job.error or "no reason given"
            out.append(
                Notice(
                    NoticeKind.JOB_FAILED,
                    _title("job failed"),
                    f"{job.kind} · {job.model} — {reason}",  # behaviour §12.7
                )
            )
        elif job.outcome == "completed" and prefs.notify_on_completion:
            out.append(
                Notice(
                    NoticeKind.JOB_COMPLETED,
                    _title("job completed"),
                    f"{job.kind} · {job.model}",  # behaviour §12.7
                )
            )
    return out


def switch_notice(running: str, state: UpdateState) -> Notice | None:
    """When the daemon of version `running` hands back a restart: did the updater switch
    to a new version (installed), or back from this one (rolled back)? None otherwise."""
    pending = state.pending
    if pending is not None and pending.previous == running:
        return Notice(
            NoticeKind.UPDATE_INSTALLED,
            _title("update installed"),
            f"Version {pending.version} is installed; restarting into it.",
        )
    rollback = state.rollback
    if rollback and rollback.get("from") == running:
        return Notice(
            NoticeKind.UPDATE_ROLLED_BACK,
            _title("update rolled back"),
            f"Version {running} was rolled back to {rollback.get('to')}: "
            f"{rollback.get('reason', 'not healthy')}.",
        )
    return None


def update_notice(layout: InstallLayout | str) -> Notice | None:
    """`switch_notice` for this install (a string: not an updatable install, None)."""
    if not isinstance(layout, InstallLayout):
        return None
    return switch_notice(layout.version, load_state(layout.state_path))


class RateLimiter:
    """Per-kind spacing plus a global cap over a sliding window; time is passed in."""

    def __init__(
        self,
        *,
        per_kind_s: float = KIND_INTERVAL_S,
        cap: int = GLOBAL_CAP,
        window_s: float = GLOBAL_WINDOW_S,
    ) -> None:
        self._per_kind_s = per_kind_s
        self._cap = cap
        self._window_s = window_s
        self._last: dict[NoticeKind, float] = {}
        self._sent: deque[float] = deque()

    def allow(self, kind: NoticeKind, now: float) -> bool:
        """True (and counted) when a notice of `kind` may be shown at `now`."""
        last = self._last.get(kind)
        if last is not None and now - last < self._per_kind_s:
            return False
        while self._sent and now - self._sent[0] >= self._window_s:
            self._sent.popleft()
        if len(self._sent) >= self._cap:
            return False
        self._last[kind] = now
        self._sent.append(now)
        return True


Send = Callable[[str, str], bool]
"""Shows one notification (title, body); False when it could not."""


class Notifier:
    """Rate-limits notices and sends them on a thread of its own, so a slow or hanging
    notification service never stalls the tray."""

    def __init__(
        self,
        send: Send,
        *,
        limiter: RateLimiter | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._send = send
        self._limiter = limiter or RateLimiter()
        self._clock = clock
        self._queue: queue.Queue[Notice | None] = queue.Queue()
        self._thread: threading.Thread | None = None
        self._failed_once = False

    def post(self, notice: Notice) -> bool:
        """Queue `notice` unless rate-limited; True when queued. Never blocks."""
        if not self._limiter.allow(notice.kind, self._clock()):
            log.debug("notification %s rate-limited", notice.kind, extra={"op": "notify"})
            return False
        if self._thread is None:
            self._thread = threading.Thread(target=self._drain, name="notify", daemon=True)
            self._thread.start()
        self._queue.put(notice)
        return True

    def close(self, grace_s: float = CLOSE_GRACE_S) -> None:
        """Send what is queued (waiting at most `grace_s`), then stop the thread."""
        if self._thread is None:
            return
        self._queue.put(None)
        self._thread.join(grace_s)
        self._thread = None

    def _drain(self) -> None:
        while (notice := self._queue.get()) is not None:
            self.deliver(notice)

    def deliver(self, notice: Notice) -> bool:
        """Send one notice now (no rate limit); a failure is logged once, then at debug."""
        try:
            shown = self._send(notice.title, notice.body)
            detail = "the notification service refused it or is missing"
        except Exception as exc:  # an OS edge: anything it raises means "not shown"
            shown, detail = False, f"{type(exc).__name__}: {exc}"
        if shown:
            log.info("notification shown: %s", notice.title, extra={"op": "show"})
            return True
        if not self._failed_once:
            self._failed_once = True
            log.warning(
                "desktop notifications are unavailable (%s); carrying on without them",
                detail,
                extra={"op": "show"},
            )
        else:
            log.debug("notification not shown: %s", notice.title, extra={"op": "show"})
        return False
