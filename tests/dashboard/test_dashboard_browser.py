"""The dashboard in real headless Chromium against a real worker daemon and studio.

Each tab loads and shows live data; pausing from the page makes the worker decline a
studio offer with code `paused` (seen both by the studio and on the page), resuming lets
the job run and it appears in the Jobs tab without a reload; a config edit from the page
is saved to config.toml. Screenshots of every tab go to $STUDIO_WORKER_DASHBOARD_SHOTS.
"""

from __future__ import annotations

import http.server
import os
import re
import threading
import time
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from dashboard_rig import TINY_LLM, Live, shots_dir, wait_for

TABS = ("status", "jobs", "models", "config", "logs", "about")


def open_dashboard(page: Any, live: Live) -> None:
    page.goto(live.dashboard)
    page.get_by_test_id("status-state").wait_for()


def test_the_token_leaves_the_address_bar_and_every_tab_loads(page: Any, live: Live) -> None:
    from playwright.sync_api import expect

    open_dashboard(page, live)
    assert "token" not in page.url
    assert page.evaluate("sessionStorage.getItem('studio-worker.token')") == live.token
    expect(page.locator("#state-pill")).to_have_text("Idle")
    expect(page.get_by_test_id("session-state")).to_have_text("Connected")
    expect(page.locator("#panel-status")).to_contain_text(live.worker_id)
    expect(page.locator("#panel-status")).to_contain_text(live.studio.url)
    expect(page.get_by_test_id("why-no-jobs")).to_contain_text("No offer has been declined")

    page.get_by_role("tab", name="Jobs").click()
    expect(page.get_by_test_id("current-job")).to_contain_text("Nothing is running")
    page.get_by_role("tab", name="Models").click()
    expect(page.locator("[data-model='synthetic/demo-model']")).to_contain_text("4.1 kB")
    page.get_by_role("tab", name="Config").click()
    expect(page.locator("#cfg-apiBaseUrl")).to_have_value(re.compile(re.escape(live.studio.url)))
    expect(page.locator("#cfg-vramThresholdGb")).to_have_value("8")
    page.get_by_role("tab", name="Logs").click()
    expect(page.get_by_test_id("log-view")).to_contain_text("local API listening")
    page.get_by_role("tab", name="About").click()
    expect(page.get_by_test_id("about-config-path")).to_have_text(str(live.config))
    expect(page.get_by_test_id("about-version")).not_to_be_empty()

    # the tabs are a keyboard tablist: arrows move the selection and the focus
    page.get_by_role("tab", name="About").focus()
    page.keyboard.press("ArrowLeft")
    expect(page.get_by_role("tab", name="Logs")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_role("tab", name="Logs")).to_be_focused()
    page.keyboard.press("ArrowRight")
    expect(page.get_by_role("tab", name="About")).to_have_attribute("aria-selected", "true")

    # the tab is in the address bar, so a reload keeps it (and the token in sessionStorage)
    page.reload()
    expect(page.get_by_role("tab", name="About")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_test_id("about-config-path")).to_have_text(str(live.config))


def test_logs_filter_by_level_and_search(page: Any, live: Live) -> None:
    from playwright.sync_api import expect

    open_dashboard(page, live)
    page.get_by_role("tab", name="Logs").click()
    view = page.get_by_test_id("log-view")
    expect(view).to_contain_text("local API listening")
    page.get_by_test_id("log-search").fill("no line says this zzz")
    expect(view).to_contain_text("No log lines match.")
    page.get_by_test_id("log-search").fill("local API listening")
    expect(view.locator(".logline")).to_have_count(1)
    page.get_by_test_id("log-search").fill("")
    page.get_by_test_id("log-level").select_option("error")
    expect(view.locator(".lvl-info")).to_have_count(0)
    page.get_by_test_id("log-level").select_option("all")
    expect(view.locator(".lvl-info").first).to_be_visible()
    # scrolling up to read turns auto-scroll off
    follow = page.get_by_label("Auto-scroll")
    expect(follow).to_be_checked()
    view.evaluate("v => { v.style.minHeight = '0'; v.style.height = '60px'; }")
    page.wait_for_function(  # following: the next update keeps it scrolled to the end
        "() => { const v = document.querySelector('[data-testid=log-view]');"
        " return v.scrollTop > 0 && v.scrollTop + v.clientHeight >= v.scrollHeight - 4; }"
    )
    view.evaluate("v => { v.scrollTop = 0; }")
    expect(follow).not_to_be_checked()


def test_pause_from_the_page_declines_an_offer_paused_then_the_job_appears_live(
    page: Any, live: Live
) -> None:
    from playwright.sync_api import expect

    open_dashboard(page, live)
    page.locator("#pause-toggle").click()
    expect(page.locator("#state-pill")).to_have_text("Paused")
    assert tomllib.loads(live.config.read_text())["paused"] is True

    job_id = live.studio.submit("image", {"prompt": "a paused fox", "width": 64, "height": 64})
    # the page shows the decline and its reason, without a reload
    row = page.get_by_test_id("declined-offers").locator(f"tr[data-job='{job_id}']")
    expect(row).to_contain_text("paused")
    expect(row).to_contain_text("worker paused by operator")
    assert live.studio.get(f"/admin/jobs/{job_id}")["status"] == "queued"
    worker_log = wait_for(
        lambda: f"rejecting offer {job_id}: worker is paused" in live.worker.log,
        30,
        "the paused rejection in the worker's log",
    )
    assert worker_log

    page.get_by_role("tab", name="Jobs").click()
    expect(page.get_by_test_id("job-history").locator(f"tr[data-job='{job_id}']")).to_have_count(0)
    page.locator("#pause-toggle").click()
    expect(page.locator("#state-pill")).not_to_have_text("Paused")
    row = page.get_by_test_id("job-history").locator(f"tr[data-job='{job_id}']")
    expect(row).to_contain_text("Done", timeout=60_000)
    assert live.studio.wait_job(job_id)["status"] == "done"
    row.click()
    expect(page.get_by_test_id("job-detail")).to_contain_text("a paused fox")
    expect(page.get_by_test_id("job-log")).to_be_visible()


def test_a_config_edit_from_the_page_is_validated_then_saved(page: Any, live: Live) -> None:
    from playwright.sync_api import expect

    open_dashboard(page, live)
    page.get_by_role("tab", name="Config").click()
    interval = page.locator("#cfg-autoUpdateIntervalSecs")
    interval.fill("5")
    expect(page.locator("#cfg-autoUpdateIntervalSecs-error")).to_have_text(
        "must be at least 60 seconds"
    )
    expect(page.get_by_role("button", name="Save")).to_be_disabled()
    page.get_by_role("button", name="Reset").click()

    page.locator("#cfg-vramThresholdGb").fill("6.5")
    page.locator("#cfg-onlyWhenIdle").check()
    expect(page.get_by_test_id("config-state")).to_have_text("Unsaved changes")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_test_id("config-state")).to_contain_text(
        "Saved: vramThresholdGb, onlyWhenIdle"
    )
    saved = tomllib.loads(live.config.read_text())
    assert (saved["vram_threshold_gb"], saved["only_when_idle"]) == (6.5, True)
    assert live.api("GET", "/daemon/config").json()["vramThresholdGb"] == 6.5
    # the Status tab follows (and says why offers may be declined now)
    page.get_by_role("tab", name="Status").click()
    expect(page.locator("#panel-status")).to_contain_text("6.5 GB")
    expect(page.get_by_test_id("why-no-jobs")).to_contain_text("Only when idle")
    live.api("PUT", "/daemon/config", json={"onlyWhenIdle": False, "vramThresholdGb": 8.0})


def ui_toml(live: Live) -> dict[str, Any]:
    path = live.config.parent / "ui.toml"
    return tomllib.loads(path.read_text()) if path.exists() else {}


def test_this_window_prefs_apply_and_store_at_once(page: Any, live: Live) -> None:
    from playwright.sync_api import expect

    open_dashboard(page, live)
    html = page.locator("html")
    expect(html).to_have_attribute("data-theme", "dark")  # the default
    page.get_by_role("tab", name="Config").click()
    card = page.get_by_test_id("window-prefs")
    expect(card).to_contain_text("This window")

    card.get_by_label("Notify when a job completes").check()  # no Save: stored at once
    wait_for(lambda: ui_toml(live).get("notify_on_completion") is True, 20, "ui.toml")
    assert ui_toml(live)["notify_on_failure"] is False
    expect(page.get_by_role("button", name="Save")).to_be_disabled()  # config.toml untouched

    card.get_by_label("Theme").select_option("light")
    expect(html).to_have_attribute("data-theme", "light")
    expect(page.locator("#theme")).to_have_value("light")  # the header follows
    wait_for(lambda: ui_toml(live).get("theme") == "light", 20, "theme = light in ui.toml")
    page.locator("#theme").select_option("system")  # and the card follows the header
    expect(card.get_by_label("Theme")).to_have_value("system")
    expect(html).not_to_have_attribute("data-theme", re.compile(".*"))
    wait_for(lambda: ui_toml(live).get("theme") == "system", 20, "theme = system in ui.toml")

    moving = "() => { const s = document.createElement('span'); const p = document.createElement('div'); p.className = 'progress'; p.append(s); document.body.append(p); const d = getComputedStyle(s).transitionDuration; p.remove(); return d; }"  # noqa: E501
    assert page.evaluate(moving) != "0s"
    card.get_by_label("Reduce motion").check()
    expect(html).to_have_attribute("data-reduce-motion", "")
    assert page.evaluate(moving) == "0s"
    wait_for(lambda: ui_toml(live).get("reduce_motion") is True, 20, "reduce_motion in ui.toml")

    live.api("PUT", "/ui/prefs", json={"theme": "light"}).raise_for_status()  # another client
    page.reload()
    expect(html).to_have_attribute("data-theme", "light")
    page.get_by_role("tab", name="Config").click()
    expect(card.get_by_label("Notify when a job completes")).to_be_checked()
    expect(card.get_by_label("Reduce motion")).to_be_checked()
    restored = {"theme": "dark", "reduceMotion": False, "notifyOnCompletion": False}
    live.api("PUT", "/ui/prefs", json=restored).raise_for_status()
    expect(html).to_have_attribute("data-theme", "dark")  # polled: follows the file


WEIGHTS = b"w" * 1_000_000  # the store reads 64 KiB chunks: half of this shows


@pytest.fixture
def held_file() -> Iterator[tuple[str, threading.Event]]:
    """A loopback file server that sends half of /weights.bin, then waits for `release`."""
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Length", str(len(WEIGHTS)))
            self.end_headers()
            half = len(WEIGHTS) // 2
            for start in range(0, half, half // 5):  # paced, so the progress moves on screen
                self.wfile.write(WEIGHTS[start : min(start + half // 5, half)])
                self.wfile.flush()
                time.sleep(0.1)
            release.wait(60)
            self.wfile.write(WEIGHTS[half:])

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", release
    release.set()
    server.shutdown()
    server.server_close()


def test_a_pull_from_the_page_shows_its_download_then_the_cached_model(
    page: Any, live: Live, held_file: tuple[str, threading.Event]
) -> None:
    from playwright.sync_api import expect

    base, release = held_file
    open_dashboard(page, live)
    page.get_by_role("tab", name="Models").click()
    page.locator("#pull-model").fill("page-pulled")
    page.locator("#pull-engine").fill("llama-cpp")
    page.locator("#pull-url").fill(f"{base}/weights.bin")
    page.get_by_role("button", name="Pull").click()
    pulls = page.get_by_test_id("pulls")
    expect(pulls).to_contain_text("llama-cpp/page-pulled")
    expect(pulls).to_contain_text("running")
    # the panel was rebuilt with the pull in it: the form kept what was typed
    expect(page.locator("#pull-model")).to_have_value("page-pulled")
    downloads = page.get_by_test_id("downloads")
    expect(downloads).to_contain_text("weights.bin")
    expect(downloads).to_contain_text("of 1.0 MB")
    expect(downloads.get_by_role("progressbar")).to_be_visible()
    pulling = page.locator("[data-model='llama-cpp/page-pulled']")
    expect(pulling.get_by_role("button", name="Delete")).to_be_disabled()
    folder = shots_dir()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        expect(downloads).to_contain_text(re.compile(r"[1-9][0-9.]* kB of 1\.0 MB"))
        page.screenshot(path=str(folder / "models-pull.png"), full_page=True)
    release.set()
    expect(pulls).to_contain_text("done")
    row = page.locator("[data-model='llama-cpp/page-pulled']")
    expect(row).to_contain_text("1.0 MB")
    expect(downloads).to_contain_text("No download in progress.")
    # and away again, from the page
    page.once("dialog", lambda dialog: dialog.accept())
    row.get_by_role("button", name="Delete").click()
    expect(row).to_have_count(0)
    models = live.api("GET", "/models").json()["models"]
    assert "llama-cpp/page-pulled" not in [m["id"] for m in models]


def test_load_then_unload_from_the_page_stops_the_engine_process(page: Any, live: Live) -> None:
    from playwright.sync_api import expect

    if not (live.models_root / TINY_LLM / "tiny.gguf").exists():
        pytest.skip("gguf is not installed: no tiny model to load")
    live.api("POST", "/models/unload", json={"engine": "llama"}).raise_for_status()  # a clean start
    open_dashboard(page, live)
    page.get_by_role("tab", name="Models").click()
    llama = page.locator("[data-testid=residency] tr[data-engine='llama']")
    expect(llama).to_contain_text("nothing")
    page.get_by_test_id(f"load-{TINY_LLM}").click()
    expect(page.get_by_test_id(f"resident-{TINY_LLM}")).to_have_text("loaded (llama)")
    expect(llama).to_contain_text(TINY_LLM)
    engine = next(
        e for e in live.api("GET", "/models/resident").json()["engines"] if e["name"] == "llama"
    )
    pid = engine["pid"]
    assert pid is not None and [r["model"] for r in engine["resident"]] == [TINY_LLM]
    page.get_by_test_id("unload-llama").click()
    expect(llama).to_contain_text("not started")
    expect(page.locator(f"[data-model='{TINY_LLM}']")).to_contain_text("not loaded")
    expect(page.get_by_test_id("unload-llama")).to_be_disabled()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the engine process is gone, and its memory with it


@pytest.fixture
def held_404() -> Iterator[tuple[str, threading.Event]]:
    """A loopback server whose files are all missing, said only once `release` is set."""
    release = threading.Event()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            release.wait(60)
            self.send_error(404)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", release
    release.set()
    server.shutdown()
    server.server_close()


def test_a_running_job_shows_live_with_its_elapsed_time_then_its_failure(
    page: Any, live: Live, held_404: tuple[str, threading.Event]
) -> None:
    from playwright.sync_api import expect

    base, release = held_404
    open_dashboard(page, live)
    page.get_by_role("tab", name="Jobs").click()
    source = {
        "engine": "llama-cpp",
        "files": [{"role": "model", "url": f"{base}/gone.gguf", "filename": "gone.gguf"}],
    }
    job_id = live.studio.post(
        "/admin/jobs",
        {
            "kind": "llm",
            "model": "held-model",
            "task": {"kind": "llm", "messages": [{"role": "user", "content": "a held question"}]},
            "modelSource": source,
        },
    )["jobId"]
    current = page.get_by_test_id("current-job")
    expect(current).to_contain_text("llm · held-model")
    expect(current).to_contain_text("a held question")
    expect(page.locator("#state-pill")).to_have_text("Busy")
    elapsed = page.get_by_test_id("current-elapsed")
    first = elapsed.inner_text()
    expect(elapsed).not_to_have_text(first)  # the clock runs without a reload
    folder = shots_dir()
    if folder is not None:
        folder.mkdir(parents=True, exist_ok=True)
        page.screenshot(path=str(folder / "jobs-running.png"), full_page=True)
    release.set()
    expect(current).to_contain_text("Nothing is running")
    row = page.get_by_test_id("job-history").locator(f"tr[data-job='{job_id}']")
    expect(row).to_contain_text("Failed")
    row.click()
    expect(page.get_by_test_id("job-detail")).to_contain_text("404")
    assert live.studio.wait_job(job_id)["status"] == "failed"


def test_check_for_updates_shows_the_answer(page: Any, live: Live) -> None:
    from playwright.sync_api import expect

    open_dashboard(page, live)
    page.get_by_role("tab", name="About").click()
    page.get_by_test_id("check-updates").click()
    result = page.get_by_test_id("update-result")
    expect(result).to_be_visible()
    answer = live.api("POST", "/daemon/update/check")
    if answer.status_code == 200:
        expect(result).to_contain_text(answer.json()["outcome"])
    else:  # no update route in this build, or no update loop: the page says so
        expect(result).to_contain_text(
            "cannot check for updates" if answer.status_code == 404 else "failed"
        )


def test_without_a_token_the_page_asks_for_one(page: Any, live: Live) -> None:
    from playwright.sync_api import expect

    page.goto(live.url + "/")
    page.evaluate("sessionStorage.clear()")
    page.reload()
    expect(page.locator("#gate")).to_be_visible()
    page.locator("#gate-token").fill("not-the-token")
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("#gate-why")).to_contain_text("refused")
    page.locator("#gate-token").fill(live.token)
    page.get_by_role("button", name="Connect").click()
    expect(page.locator("#gate")).to_be_hidden()
    expect(page.get_by_test_id("session-state")).to_have_text("Connected")


def test_screenshots_of_every_tab(page: Any, live: Live, tmp_path: Path) -> None:
    from playwright.sync_api import expect

    folder = shots_dir() or tmp_path  # docs/screenshots when asked for
    folder.mkdir(parents=True, exist_ok=True)
    job_id = live.studio.submit("image", {"prompt": "a lighthouse at dusk"})
    live.studio.wait_job(job_id)
    open_dashboard(page, live)
    loaded = (live.models_root / TINY_LLM).exists()
    prepare = {
        "jobs": lambda: page.locator(f"tr[data-job='{job_id}']").click(),
        "models": lambda: (
            loaded and live.api("POST", "/models/load", json={"model": TINY_LLM}).raise_for_status()
        ),
        "about": lambda: page.get_by_test_id("check-updates").click(),
    }
    ready = {
        "jobs": lambda: expect(page.get_by_test_id("job-log")).to_contain_text("upload"),
        "about": lambda: expect(page.get_by_test_id("update-result")).to_be_visible(),
        "logs": lambda: expect(page.get_by_test_id("log-view")).to_contain_text(job_id),
        "models": lambda: (
            loaded and expect(page.get_by_test_id(f"resident-{TINY_LLM}")).to_be_visible()
        ),
    }
    for tab in TABS:
        page.get_by_role("tab", name=tab.capitalize()).click()
        expect(page.locator(f"#panel-{tab}")).to_be_visible()
        expect(page.locator(f"#panel-{tab}")).not_to_be_empty()
        prepare.get(tab, lambda: None)()
        ready.get(tab, lambda: None)()
        page.screenshot(path=str(folder / f"{tab}.png"), full_page=True)
        assert (folder / f"{tab}.png").stat().st_size > 0
    page.locator("#theme").select_option("light")
    page.get_by_role("tab", name="Status").click()
    expect(page.locator("html")).to_have_attribute("data-theme", "light")
    page.screenshot(path=str(folder / "status-light.png"), full_page=True)
    assert ui_toml(live)["theme"] == "light"  # the header's switch is stored in ui.toml
    live.api("PUT", "/ui/prefs", json={"theme": "dark"}).raise_for_status()
