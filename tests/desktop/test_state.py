"""The tray's pure core: icon state, tooltip, menu, and the icons drawn for each state."""

from __future__ import annotations

import pytest

from studio_worker.desktop.icons import COLOURS, icon_image
from studio_worker.desktop.state import Action, TrayState, menu_entries, tooltip, tray_state
from studio_worker.protocol.outcomes import SessionState

from .snapshots import job, snap

RUNNING = job("j1")


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        (None, TrayState.DISCONNECTED),  # the daemon is not serving
        (snap(), TrayState.IDLE),
        (snap(session_state=SessionState.WAITING_FOR_APPROVAL), TrayState.IDLE),  # §12.6
        (snap(session_state=SessionState.RECONNECTING, session_attempt=3), TrayState.IDLE),
        (snap(registration={"state": "pending", "requestId": "r"}), TrayState.IDLE),
        (snap(current_job=RUNNING), TrayState.BUSY),
        (snap(paused=True), TrayState.PAUSED),
        (snap(paused=True, current_job=RUNNING), TrayState.BUSY),  # the job still runs
        (snap(session_state=SessionState.AUTH_FAILED), TrayState.DISCONNECTED),
        (snap(session_state=SessionState.FATAL, current_job=RUNNING), TrayState.DISCONNECTED),
        (snap(registration={"state": "rejected", "reason": "no"}), TrayState.DISCONNECTED),
    ],
)
def test_tray_state(snapshot: object, expected: TrayState) -> None:
    assert tray_state(snapshot) is expected  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("snapshot", "expected"),
    [
        (None, "studio-worker: not running"),
        (snap(), "studio-worker: idle · studio connected"),
        (snap(paused=True), "studio-worker: paused · studio connected"),
        (snap(current_job=RUNNING), "studio-worker: running image · sd-tiny · studio connected"),
        (
            snap(session_state=SessionState.RECONNECTING, session_attempt=4),
            "studio-worker: idle · reconnecting (4)",
        ),
        (snap(registration={"state": "pending"}), "studio-worker: idle · awaiting approval"),
        (
            snap(registration={"state": "rejected", "reason": "x"}),
            "studio-worker: idle · registration rejected",
        ),
        (
            snap(session_state=SessionState.AUTH_FAILED),
            "studio-worker: idle · studio auth failed",
        ),
    ],
)
def test_tooltip(snapshot: object, expected: str) -> None:
    assert tooltip(snapshot) == expected  # type: ignore[arg-type]


def test_menu_follows_the_pause_flag_and_the_dashboard() -> None:
    running = menu_entries(snap(), dashboard=True)
    assert [(e.label, e.action, e.enabled) for e in running] == [
        ("Open dashboard", Action.OPEN_DASHBOARD, True),
        ("Pause claiming", Action.PAUSE, True),
        ("Quit", Action.QUIT, True),
    ]
    assert [e.default for e in running] == [True, False, False]
    paused = menu_entries(snap(paused=True), dashboard=False)
    assert [(e.label, e.action, e.enabled) for e in paused] == [
        ("Open dashboard", Action.OPEN_DASHBOARD, False),
        ("Resume claiming", Action.RESUME, True),
        ("Quit", Action.QUIT, True),
    ]
    down = menu_entries(None, dashboard=False)
    assert [(e.action, e.enabled) for e in down] == [
        (Action.OPEN_DASHBOARD, False),
        (Action.PAUSE, False),
        (Action.QUIT, True),
    ]


@pytest.mark.parametrize("state", list(TrayState))
def test_each_state_has_its_own_colour(state: TrayState) -> None:
    image = icon_image(state, 64)
    assert image.size == (64, 64)
    assert image.mode == "RGBA"
    assert image.getpixel((0, 0))[3] == 0  # transparent corner
    ring = image.getpixel((32, 12))  # inside the disc, clear of the pause bars
    assert ring[:3] == COLOURS[state]
    assert len(set(COLOURS.values())) == len(TrayState)


def test_paused_icon_reads_without_colour() -> None:
    centre_paused = icon_image(TrayState.PAUSED).getpixel((26, 32))
    centre_idle = icon_image(TrayState.IDLE).getpixel((26, 32))
    assert centre_paused[:3] == (255, 255, 255)  # a pause bar
    assert centre_idle[:3] == COLOURS[TrayState.IDLE]
