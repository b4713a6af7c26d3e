"""What the tray shows and offers, as pure functions of the status board (behaviour §12.6).

`tray_state` picks the icon, `tooltip` its hover text, `menu_entries` the menu. The pystray
adapter (`tray.py`) only turns these into widgets.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from studio_worker.protocol.outcomes import SessionState
from studio_worker.status.store import Snapshot


class TrayState(StrEnum):
    IDLE = "idle"
    BUSY = "busy"
    PAUSED = "paused"
    DISCONNECTED = "disconnected"


class Action(StrEnum):
    OPEN_DASHBOARD = "open_dashboard"
    PAUSE = "pause"
    RESUME = "resume"
    QUIT = "quit"


# The studio refuses this worker: nothing will change until the operator acts (§12.6 red).
REFUSED_SESSIONS = frozenset({SessionState.AUTH_FAILED, SessionState.FATAL})
REJECTED = "rejected"


def tray_state(snapshot: Snapshot | None) -> TrayState:
    """Red while the daemon is not serving (None) or the studio refuses the worker; amber
    while a job runs; paused while claiming is paused; green otherwise, including while
    waiting for approval or reconnecting (§12.6)."""
    if snapshot is None:
        return TrayState.DISCONNECTED
    if snapshot.session_state in REFUSED_SESSIONS:
        return TrayState.DISCONNECTED
    if snapshot.registration.get("state") == REJECTED:
        return TrayState.DISCONNECTED
    if snapshot.current_job is not None:
        return TrayState.BUSY  # a job started before a pause still runs
    if snapshot.paused:
        return TrayState.PAUSED
    return TrayState.IDLE


_SESSION_WORDS = {
    SessionState.WAITING_FOR_APPROVAL: "awaiting approval",
    SessionState.CONNECTING: "connecting",
    SessionState.CONNECTED: "studio connected",
    SessionState.RECONNECTING: "reconnecting",
    SessionState.AUTH_FAILED: "studio auth failed",
    SessionState.FATAL: "stopped by the studio",
    SessionState.STOPPED: "stopped",
}


def tooltip(snapshot: Snapshot | None) -> str:
    """One line: `studio-worker: <activity> · <studio link>`."""
    if snapshot is None:
        return "studio-worker: not running"
    if snapshot.registration.get("state") == REJECTED:
        link = "registration rejected"
    elif snapshot.registration.get("state") == "pending":
        link = "awaiting approval"
    else:
        link = _SESSION_WORDS.get(snapshot.session_state, snapshot.session_state.value)
        if snapshot.session_state is SessionState.RECONNECTING:
            link = f"reconnecting ({snapshot.session_attempt})"
    job = snapshot.current_job
    if job is not None:
        activity = f"running {job.kind} · {job.model}"
    else:
        activity = "paused" if snapshot.paused else "idle"
    return f"studio-worker: {activity} · {link}"


@dataclass(frozen=True, slots=True)
class MenuEntry:
    label: str
    action: Action
    enabled: bool = True
    default: bool = False  # what a click on the icon itself does, where the OS allows


def menu_entries(snapshot: Snapshot | None, *, dashboard: bool) -> tuple[MenuEntry, ...]:
    """Open dashboard / Pause or Resume claiming / Quit. The pause label follows the
    daemon's flag; "Open dashboard" is disabled while the local API is not up."""
    paused = snapshot.paused if snapshot is not None else False
    toggle = (
        MenuEntry("Resume claiming", Action.RESUME, enabled=snapshot is not None)
        if paused
        else MenuEntry("Pause claiming", Action.PAUSE, enabled=snapshot is not None)
    )
    return (
        MenuEntry("Open dashboard", Action.OPEN_DASHBOARD, enabled=dashboard, default=True),
        toggle,
        MenuEntry("Quit", Action.QUIT),
    )
