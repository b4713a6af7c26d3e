"""The dashboard while the worker waits for approval, and after a rejection: the approval
hint with the request id, the switch to Connected without a reload, Reset registration."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from dashboard_rig import StudioProcess, discovered, pending_request, start_worker, wait_for


def test_pending_hint_then_approval_shows_live(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    studio = StudioProcess(tmp_path / "studio")
    worker, config, _ = start_worker(tmp_path, studio)
    try:
        request = pending_request(studio)
        found = discovered(config)
        page.goto(f"{found['url']}/#token={found['token']}")
        hint = page.get_by_test_id("approval-hint")
        expect(hint).to_contain_text(request["requestId"])
        expect(hint).to_contain_text(studio.url)
        expect(page.locator("#state-pill")).to_have_text("Awaiting approval")
        expect(page.get_by_test_id("why-no-jobs")).to_contain_text("not approved yet")

        studio.post(f"/admin/requests/{request['requestId']}/approve")
        expect(page.get_by_test_id("session-state")).to_have_text("Connected")
        expect(hint).to_have_count(0)
        expect(page.locator("#state-pill")).to_have_text("Idle")

        worker.stop()  # the page says the daemon is gone, and keeps trying
        expect(page.locator("#unreachable")).to_be_visible()
        expect(page.locator("#state-pill")).to_have_text("Daemon unreachable")
        expect(page.locator("#pause-toggle")).to_be_disabled()
    finally:
        worker.stop()
        studio.stop()


def test_rejected_then_reset_from_the_page_sends_a_new_request(page: Any, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    studio = StudioProcess(tmp_path / "studio")
    worker, config, _ = start_worker(tmp_path, studio)
    try:
        first = pending_request(studio)
        found = discovered(config)
        page.goto(f"{found['url']}/#token={found['token']}")
        studio.post(f"/admin/requests/{first['requestId']}/reject", {"reason": "not this box"})
        expect(page.locator("#state-pill")).to_have_text("Registration rejected")
        expect(page.locator("#panel-status")).to_contain_text("Reason: not this box")
        page.get_by_role("button", name="Reset registration and ask again").click()

        def fresh() -> list[dict[str, Any]] | None:
            pending = studio.get("/admin/requests?status=pending")
            return [r for r in pending if r["requestId"] != first["requestId"]] or None

        again = wait_for(fresh, 60, "a new register request")
        expect(page.get_by_test_id("approval-hint")).to_contain_text(again[0]["requestId"])
    finally:
        worker.stop()
        studio.stop()
