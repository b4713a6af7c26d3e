"""The dashboard's static files and the routes added for it, on a real daemon: the page is
served without the token but behind the Host/Origin guards, the About route, the declined
offers on the status board, and model pulls with progress and failure."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator

import pytest
from aiohttp import web
from tests.localapi.conftest import Rig, wait_until

from studio_worker.localapi.dashboard import ASSETS, SECURITY_HEADERS, dashboard_url, is_public


async def test_page_and_assets_need_no_token_but_pass_the_host_and_origin_guards(
    rig: Rig,
) -> None:
    page = await rig.http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/app.js">' in page.text
    for name, value in SECURITY_HEADERS.items():
        assert page.headers[name] == value
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]
    for name, content_type in ASSETS.items():
        asset = await rig.http.get(f"/ui/{name}")
        assert asset.status_code == 200, name
        assert asset.headers["content-type"].startswith(content_type)
        assert asset.content
    assert rig.token not in page.text

    rebinding = await rig.http.get("/", headers={"Host": "evil.example"})
    assert (rebinding.status_code, rebinding.text) == (
        403,
        'forbidden: non-loopback Host header "evil.example"',
    )
    framed = await rig.http.get("/ui/app.js", headers={"Origin": "https://evil.example"})
    assert framed.status_code == 403
    # only the listed files are public; anything else under /ui/ needs the token, then 404s
    assert (await rig.http.get("/ui/../server.py")).status_code in (401, 404)
    assert (await rig.http.get("/ui/secret.txt")).status_code == 401
    assert (await rig.get("/ui/secret.txt")).status_code == 404
    assert (await rig.http.post("/")).status_code == 401


def test_dashboard_url_carries_the_token_in_the_fragment() -> None:
    assert dashboard_url("http://127.0.0.1:4787/", "abc") == "http://127.0.0.1:4787/#token=abc"
    assert is_public("GET", "/") and is_public("HEAD", "/ui/app.js")
    assert not is_public("POST", "/") and not is_public("GET", "/ui/index.html")
    assert not is_public("GET", "/daemon/status")


async def test_about_needs_the_token_and_names_version_variant_and_paths(rig: Rig) -> None:
    assert (await rig.http.get("/daemon/about")).status_code == 401
    about = (await rig.get("/daemon/about")).json()
    assert about["variant"] == "cpu"
    assert about["configPath"] == str(rig.config)
    assert about["modelsRoot"] == str(rig.models_root)
    assert about["localApiUrl"] == rig.url
    assert about["autoUpdate"]["enabled"] is False
    assert "synthetic" in about["engines"]
    assert about["version"]


async def test_status_lists_the_offer_declined_while_paused(rig: Rig) -> None:
    assert (await rig.get("/daemon/status")).json()["declinedOffers"] == []
    await rig.post("/daemon/pause")
    job_id = rig.studio.submit_job("image", {"prompt": "a fox"})

    def declined() -> bool:
        return bool(rig.daemon.status.snapshot().declined)

    await wait_until(declined, "the paused rejection")
    offers = (await rig.get("/daemon/status")).json()["declinedOffers"]
    assert offers[0]["jobId"] == job_id
    assert (offers[0]["code"], offers[0]["reason"]) == ("paused", "worker paused by operator")
    assert (offers[0]["kind"], offers[0]["model"]) == ("image", "synthetic")
    await rig.post("/daemon/resume")
    assert (await rig.studio.wait_for_job(job_id, 30)).status == "done"


PAYLOAD = b"model weights " * 5000


@pytest.fixture
async def file_server() -> AsyncIterator[tuple[str, asyncio.Event]]:
    """Serves /weights.bin once `release` is set (so a pull stays running until then)."""
    release = asyncio.Event()

    async def weights(request: web.Request) -> web.StreamResponse:
        await release.wait()
        return web.Response(body=PAYLOAD)

    app = web.Application()
    app.router.add_get("/weights.bin", weights)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = runner.addresses[0][1]
    yield f"http://127.0.0.1:{port}", release
    release.set()
    await runner.cleanup()


def pull_body(base: str, name: str = "weights.bin", sha: str | None = None) -> dict[str, object]:
    return {
        "model": "tiny-pulled",
        "source": {
            "engine": "llama-cpp",
            "files": [{"role": "model", "url": f"{base}/{name}", "filename": name, "sha256": sha}],
        },
    }


async def test_pull_runs_on_the_daemon_then_the_model_is_cached(
    rig: Rig, file_server: tuple[str, asyncio.Event]
) -> None:
    base, release = file_server
    sha = hashlib.sha256(PAYLOAD).hexdigest()
    started = await rig.post("/models/pull", json=pull_body(base, sha=sha))
    assert (started.status_code, started.json()) == (
        202,
        {"ok": True, "id": "llama-cpp/tiny-pulled"},
    )
    again = await rig.post("/models/pull", json=pull_body(base, sha=sha))
    assert (again.status_code, again.json()["error"]) == (409, "model_busy")
    pulls = (await rig.get("/models/pulls")).json()
    assert [(p["id"], p["state"]) for p in pulls["pulls"]] == [("llama-cpp/tiny-pulled", "running")]
    assert "downloads" in pulls

    release.set()

    async def state() -> str:
        return str((await rig.get("/models/pulls")).json()["pulls"][0]["state"])

    async with asyncio.timeout(30):
        while await state() == "running":
            await asyncio.sleep(0.05)
    done = (await rig.get("/models/pulls")).json()["pulls"][0]
    assert (done["state"], done["error"]) == ("done", None)
    assert done["finishedAt"]
    models = {m["id"]: m for m in (await rig.get("/models")).json()["models"]}
    assert models["llama-cpp/tiny-pulled"]["sizeBytes"] == len(PAYLOAD)


async def test_a_failed_pull_says_why(rig: Rig, file_server: tuple[str, asyncio.Event]) -> None:
    base, release = file_server
    release.set()
    await rig.post("/models/pull", json=pull_body(base, name="missing.bin"))

    async def pull() -> dict[str, object]:
        found: dict[str, object] = (await rig.get("/models/pulls")).json()["pulls"][0]
        return found

    async with asyncio.timeout(30):
        while (await pull())["state"] == "running":
            await asyncio.sleep(0.05)
    failed = await pull()
    assert failed["state"] == "failed"
    assert "404" in str(failed["error"])


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"source": {"engine": "x", "files": []}}, "model: must be a model name"),
        ({"model": "m", "source": {"engine": "x", "files": []}}, "source: lists no files"),
        ({"model": "m"}, "source: "),
        (
            {
                "model": "m",
                "source": {
                    "engine": "x",
                    "files": [{"role": "model", "url": "ftp://host/f.bin", "filename": "f.bin"}],
                },
            },
            "must use https",
        ),
        (
            {
                "model": "m",
                "source": {
                    "engine": "x",
                    "files": [
                        {"role": "model", "url": "https://h.example/f", "filename": "../f.bin"}
                    ],
                },
            },
            "",
        ),
    ],
)
async def test_pull_refuses_bad_bodies_before_any_request(
    rig: Rig, body: dict[str, object], message: str
) -> None:
    answer = await rig.post("/models/pull", json=body)
    assert answer.status_code == 400
    assert answer.json()["error"] == "bad_request"
    assert message in answer.json()["message"]
    assert (await rig.get("/models/pulls")).json()["pulls"] == []


def test_every_shipped_file_is_listed_and_every_listed_file_ships() -> None:
    from studio_worker.localapi.dashboard import INDEX, STATIC_DIR

    shipped = {p.name for p in STATIC_DIR.iterdir() if p.is_file()}
    assert shipped == {INDEX, *ASSETS}
    index = (STATIC_DIR / INDEX).read_text()
    for name in ASSETS:  # the page and its modules name only listed files
        if name.endswith(".js") and name != "app.js":
            assert (
                f'"./{name}"'
                in (STATIC_DIR / "app.js").read_text() + (STATIC_DIR / "config.js").read_text()
            )
    assert "/ui/app.js" in index and "/ui/style.css" in index
    assert "http://" not in index and "https://" not in index  # no CDN
