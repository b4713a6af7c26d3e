"""Fixtures of the dashboard tests: the live studio and worker, headless Chromium."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from typing import Any

import pytest
from dashboard_rig import (
    CHROMIUM,
    CHROMIUM_ARGS,
    Live,
    StudioProcess,
    discovered,
    pending_request,
    start_worker,
    wait_for,
)


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Live]:
    root = tmp_path_factory.mktemp("dashboard")
    studio = StudioProcess(root / "studio")
    worker, config, models_root = start_worker(root, studio)
    try:
        request_id = pending_request(studio)["requestId"]
        worker_id = studio.post(f"/admin/requests/{request_id}/approve")["workerId"]
        found = discovered(config)
        live = Live(studio, worker, config, models_root, found["url"], found["token"], worker_id)
        wait_for(lambda: live.status()["session"]["state"] == "connected", 60, "the studio session")
        yield live
    finally:
        worker.stop()
        studio.stop()


@pytest.fixture(scope="module")
def browser_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    if not CHROMIUM.exists():
        pytest.skip("no /usr/bin/chromium: install Debian's chromium (apt-get install chromium)")
    sync_api = pytest.importorskip(
        "playwright.sync_api", reason="the playwright package is not installed (pip)"
    )
    profile = tmp_path_factory.mktemp("chromium-profile")
    with sync_api.sync_playwright() as pw:
        context = pw.chromium.launch_persistent_context(
            str(profile),
            executable_path=str(CHROMIUM),
            headless=True,
            args=CHROMIUM_ARGS,
            viewport={"width": 1280, "height": 860},
            color_scheme="dark",
        )
        try:
            yield context
        finally:
            context.close()
    shutil.rmtree(profile, ignore_errors=True)


@pytest.fixture
def page(browser_context: Any) -> Iterator[Any]:
    page = browser_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    # An HTTP error answer (a refused token, a 404) is logged by Chromium as "Failed to
    # load resource"; the tests check those answers themselves. Anything else is a bug.
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.set_default_timeout(20_000)
    yield page
    page.close()
    assert errors == [], f"the page logged errors: {errors}"
