"""The model store against a real HTTP server on loopback."""

from __future__ import annotations

import asyncio
import errno
import logging
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, BinaryIO

import httpx
import pytest

from studio_worker import user_agent
from studio_worker.domain.results import JobError
from studio_worker.domain.tasks import ModelFile, ModelSource
from studio_worker.models import store as store_module
from studio_worker.models.errors import ModelError, ModelNotCached
from studio_worker.models.paths import sanitise_id
from studio_worker.models.store import CachedFile, DownloadProgress, ModelStore
from studio_worker.status.store import StatusStore

from .conftest import FileServer, blob, sha

DATA = blob(300_000)
OTHER = blob(50_000, seed=8)


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient() as client:
        yield client


@pytest.fixture
def make_store(tmp_path: Path, http: httpx.AsyncClient) -> Callable[..., ModelStore]:
    def make(**kwargs: Any) -> ModelStore:
        kwargs.setdefault("stall_timeout_s", 2.0)
        kwargs.setdefault("backoff_base_s", 0.01)
        return ModelStore(tmp_path / "models", http=http, **kwargs)

    return make


def one_file(url: str, filename: str = "model.gguf", **extra: Any) -> ModelSource:
    return ModelSource(
        engine="sd-cpp", files=[ModelFile(role="model", url=url, filename=filename, **extra)]
    )


# -- the happy path --------------------------------------------------------------------


async def test_fresh_download_is_verified_and_laid_out_per_engine_and_model(
    server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    server.files = {"model.gguf": DATA, "vae.safetensors": OTHER}
    store = make_store()

    paths = await store.ensure("org/model:v2", server.source("model.gguf", "vae.safetensors"))

    folder = tmp_path / "models" / "sd-cpp" / "org_model_v2"
    assert paths == {
        "model.gguf": folder / "model.gguf",
        "vae.safetensors": folder / "vae.safetensors",
    }
    assert paths["model.gguf"].is_absolute()
    assert paths["model.gguf"].read_bytes() == DATA
    assert paths["vae.safetensors"].read_bytes() == OTHER
    assert sorted(p.name for p in folder.iterdir()) == ["model.gguf", "vae.safetensors"]
    assert server.ranges() == [None, None]
    assert {s["ua"] for s in server.seen} == {user_agent()}


async def test_a_file_on_disk_is_trusted_without_a_request(
    server: FileServer, make_store: Callable[..., ModelStore]
) -> None:
    server.files = {"model.gguf": DATA}
    store = make_store()
    await store.ensure("m", server.source("model.gguf"))
    # Even a wrong sha256 does not trigger a re-hash or a second fetch.
    source = one_file(server.file_url("model.gguf"), sha256="0" * 64)
    paths = await store.ensure("m", source)
    assert paths["model.gguf"].read_bytes() == DATA
    assert len(server.seen) == 1


async def test_sha256_is_compared_case_insensitively(
    server: FileServer, make_store: Callable[..., ModelStore]
) -> None:
    server.files = {"model.gguf": DATA}
    source = one_file(server.file_url("model.gguf"), sha256=sha(DATA).upper())
    paths = await make_store().ensure("m", source)
    assert paths["model.gguf"].read_bytes() == DATA


async def test_legacy_flat_file_is_reused_in_place_without_a_request(
    server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    root = tmp_path / "models"
    root.mkdir()
    (root / "model.gguf").write_bytes(b"operator placed")
    store = make_store()
    paths = await store.ensure("m", one_file(server.file_url("model.gguf"), sha256="0" * 64))
    assert paths == {"model.gguf": root / "model.gguf"}
    assert server.seen == []
    assert not (root / "sd-cpp").exists()


async def test_reference_per_model_dir_is_reused_in_place(
    server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    old = tmp_path / "models" / "org_model" / "model.gguf"
    old.parent.mkdir(parents=True)
    old.write_bytes(b"from the reference worker")
    paths = await make_store().ensure("org/model", one_file(server.file_url("model.gguf")))
    assert paths == {"model.gguf": old}
    assert server.seen == []


async def test_redirects_are_followed(
    server: FileServer, make_store: Callable[..., ModelStore]
) -> None:
    server.files = {"model.gguf": DATA}
    source = one_file(f"{server.url}/r/model.gguf", sha256=sha(DATA))
    paths = await make_store().ensure("m", source)
    assert paths["model.gguf"].read_bytes() == DATA
    assert [s["path"] for s in server.seen] == ["/r/model.gguf", "/f/model.gguf"]


# -- resume ----------------------------------------------------------------------------


async def test_cut_connection_resumes_with_range(
    server: FileServer, make_store: Callable[..., ModelStore]
) -> None:
    server.files = {"model.gguf": DATA}
    server.plan = [("cut", 100_000)]
    paths = await make_store().ensure("m", server.source("model.gguf"))
    assert paths["model.gguf"].read_bytes() == DATA
    assert len(server.seen) == 2
    first, second = server.ranges()
    assert first is None
    assert second is not None and second.startswith("bytes=")
    resumed_at = int(second.removeprefix("bytes=").rstrip("-"))
    assert 0 < resumed_at <= 100_000
    assert second == f"bytes={resumed_at}-"
    assert not (paths["model.gguf"].parent / "model.gguf.part").exists()


async def test_resume_after_a_restart_uses_the_partial_on_disk(
    server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    server.files = {"model.gguf": DATA}
    folder = tmp_path / "models" / "sd-cpp" / "m"
    folder.mkdir(parents=True)
    (folder / "model.gguf.part").write_bytes(DATA[:123_456])

    progress: list[DownloadProgress] = []
    paths = await make_store().ensure("m", server.source("model.gguf"), progress.append)

    assert paths["model.gguf"].read_bytes() == DATA
    assert server.ranges() == ["bytes=123456-"]
    assert progress[0].done == 123_456 and progress[0].total == len(DATA)
    assert not (folder / "model.gguf.part").exists()


async def test_a_resumed_prefix_that_is_wrong_fails_the_sha(
    server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    server.files = {"model.gguf": DATA}
    folder = tmp_path / "models" / "sd-cpp" / "m"
    folder.mkdir(parents=True)
    (folder / "model.gguf.part").write_bytes(b"\0" * 1000)  # not DATA's first 1000 bytes

    with pytest.raises(ModelError, match="sha256 mismatch"):
        await make_store().ensure("m", server.source("model.gguf"))
    assert server.ranges() == ["bytes=1000-"]
    assert list(folder.iterdir()) == []


async def test_server_ignoring_range_starts_over(
    server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    server.files = {"model.gguf": DATA}
    server.plan = ["ignore-range"]
    folder = tmp_path / "models" / "sd-cpp" / "m"
    folder.mkdir(parents=True)
    (folder / "model.gguf.part").write_bytes(b"\0" * 5000)

    paths = await make_store().ensure("m", server.source("model.gguf"))
    assert paths["model.gguf"].read_bytes() == DATA
    assert server.ranges() == ["bytes=5000-"]


async def test_416_drops_the_partial_and_starts_over(
    server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    server.files = {"model.gguf": DATA}
    server.plan = ["416"]
    folder = tmp_path / "models" / "sd-cpp" / "m"
    folder.mkdir(parents=True)
    (folder / "model.gguf.part").write_bytes(DATA[:7000])

    paths = await make_store().ensure("m", server.source("model.gguf"))
    assert paths["model.gguf"].read_bytes() == DATA
    assert server.ranges() == ["bytes=7000-", None]


async def test_wrong_content_range_drops_the_partial_and_starts_over(
    server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    server.files = {"model.gguf": DATA}
    server.plan = [("bad-range", 0)]
    folder = tmp_path / "models" / "sd-cpp" / "m"
    folder.mkdir(parents=True)
    (folder / "model.gguf.part").write_bytes(DATA[:7000])

    paths = await make_store().ensure("m", server.source("model.gguf"))
    assert paths["model.gguf"].read_bytes() == DATA
    assert server.ranges() == ["bytes=7000-", None]


async def test_a_whole_partial_is_promoted_after_416(
    server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    """Killed between the last byte and the rename: no need to fetch it all again."""
    server.files = {"model.gguf": DATA}
    folder = tmp_path / "models" / "sd-cpp" / "m"
    folder.mkdir(parents=True)
    (folder / "model.gguf.part").write_bytes(DATA)

    paths = await make_store().ensure("m", server.source("model.gguf"))
    assert paths["model.gguf"].read_bytes() == DATA
    assert server.ranges() == [f"bytes={len(DATA)}-"]


# -- verification ----------------------------------------------------------------------


async def test_sha256_mismatch_leaves_no_file_and_no_partial(
    server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    server.files = {"model.gguf": DATA}
    server.plan = ["wrong"]
    with pytest.raises(ModelError) as info:
        await make_store().ensure("m", server.source("model.gguf"))
    wrong = bytes(b ^ 0xFF for b in DATA)
    assert info.value.message == (
        f"sha256 mismatch: downloaded body hashes to {sha(wrong)} but the registry "
        f"expects {sha(DATA)} (corrupted or tampered download)"
    )
    assert info.value.retryable is True
    assert isinstance(info.value, JobError)
    folder = tmp_path / "models" / "sd-cpp" / "m"
    assert list(folder.iterdir()) == []
    assert len(server.seen) == 1  # not retried: the registry and the server disagree


async def test_size_mismatch_against_the_declared_total(
    server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    server.files = {"model.gguf": DATA}
    server.plan = ["lie-total"]
    folder = tmp_path / "models" / "sd-cpp" / "m"
    folder.mkdir(parents=True)
    (folder / "model.gguf.part").write_bytes(DATA[:1000])
    with pytest.raises(ModelError) as info:
        await make_store().ensure("m", server.source("model.gguf", with_sha=False))
    assert info.value.message == (
        f"size mismatch: the file has {len(DATA)} bytes but the server declared a total of "
        f"{len(DATA) + 100} in Content-Range (download truncated or corrupt)"
    )
    assert info.value.retryable is True
    assert list(folder.iterdir()) == []


async def test_size_mismatch_against_content_length(tmp_path: Path) -> None:
    """A body longer than its Content-Length (a broken proxy): h11 would never let the
    loopback server send one, so this one case uses httpx's mock transport."""

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(
            200, headers={"Content-Length": "10"}, stream=httpx.ByteStream(b"x" * 12)
        )

    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as http:
        store = ModelStore(tmp_path, http=http)
        with pytest.raises(ModelError) as info:
            await store.ensure("m", one_file("https://example.com/model.gguf"))
    assert info.value.message == (
        "size mismatch: wrote 12 bytes but the server declared Content-Length 10 "
        "(download truncated or corrupt)"
    )
    assert list((tmp_path / "sd-cpp" / "m").iterdir()) == []


# -- guards ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name",
    [
        "",
        ".",
        "..",
        "../escape.gguf",
        "a/../../b",
        "sub/model.gguf",
        "/etc/passwd",
        "\\\\server\\share\\x",
        "dir\\model.gguf",
        "C:model.gguf",
        "x..y",
        "nul\0byte",
    ],
)
async def test_unsafe_filenames_are_refused_before_any_request(
    name: str, server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    server.files = {"model.gguf": DATA}
    with pytest.raises(ModelError) as info:
        await make_store().ensure("m", one_file(server.file_url("model.gguf"), filename=name))
    assert info.value.message == f'model filename must be a plain file name: "{name}"'
    assert info.value.retryable is False
    assert server.seen == []
    assert not (tmp_path / "models").exists()


@pytest.mark.parametrize(
    "url",
    [
        "http://example.com/model.gguf",
        "http://10.0.0.1/model.gguf",
        "ftp://127.0.0.1/model.gguf",
        "file:///etc/passwd",
        "model.gguf",
        "https:///no-host",
    ],
)
async def test_url_guard_refuses_before_any_request(
    url: str, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    with pytest.raises(ModelError) as info:
        await make_store().ensure("m", one_file(url))
    assert info.value.message.startswith(
        "model file URL must use https (loopback http is allowed for tests/mirrors): "
    )
    assert info.value.retryable is False
    assert not (tmp_path / "models").exists()


async def test_url_guard_hides_the_query_of_a_signed_url(
    make_store: Callable[..., ModelStore],
) -> None:
    with pytest.raises(ModelError) as info:
        await make_store().ensure("m", one_file("http://cdn.example/x.gguf?X-Signature=secret"))
    assert "secret" not in info.value.message
    assert info.value.message.endswith(": http://cdn.example/x.gguf")


@pytest.mark.parametrize("host", ["localhost", "127.0.0.1", "127.3.4.5", "[::1]"])
async def test_loopback_http_is_allowed(
    host: str, make_store: Callable[..., ModelStore], server: FileServer
) -> None:
    port = server.url.rsplit(":", 1)[1]
    # Only 127.0.0.1 answers; the others pass the guard and fail to connect (retryable).
    store = make_store(max_attempts=1)
    source = one_file(f"http://{host}:{port}/f/missing.gguf")
    with pytest.raises(ModelError) as info:
        await store.ensure("m", source)
    assert "must use https" not in info.value.message


async def test_a_redirect_to_plain_http_elsewhere_is_refused(
    server: FileServer, make_store: Callable[..., ModelStore]
) -> None:
    server.files = {"model.gguf": DATA}
    url = f"{server.url}/r/model.gguf?to=http://example.com/model.gguf"
    with pytest.raises(ModelError) as info:
        await make_store().ensure("m", one_file(url))
    assert info.value.message == (
        "model file URL must use https (loopback http is allowed for tests/mirrors): "
        "http://example.com/model.gguf"
    )
    assert len(server.seen) == 1


def test_sanitised_ids() -> None:
    assert sanitise_id("..") == "_."
    assert sanitise_id(".git") == "_git"
    assert sanitise_id("org/model:v2") == "org_model_v2"
    assert sanitise_id("") == "_"
    assert sanitise_id("z-image-turbo-q4_k_m.gguf") == "z-image-turbo-q4_k_m.gguf"
    assert sanitise_id("ü/ï") == "___"


# -- statuses, stalls, retries ---------------------------------------------------------


async def test_5xx_is_retried_with_backoff(
    server: FileServer, make_store: Callable[..., ModelStore]
) -> None:
    server.files = {"model.gguf": DATA}
    server.plan = [("status", 503), ("status", 500)]
    paths = await make_store().ensure("m", server.source("model.gguf"))
    assert paths["model.gguf"].read_bytes() == DATA
    assert len(server.seen) == 3


async def test_5xx_gives_up_after_max_attempts(
    server: FileServer, make_store: Callable[..., ModelStore]
) -> None:
    server.files = {"model.gguf": DATA}
    server.plan = [("status", 502)] * 3
    with pytest.raises(ModelError) as info:
        await make_store(max_attempts=3).ensure("m", server.source("model.gguf"))
    url = server.file_url("model.gguf")
    assert info.value.message == f"GET {url} -> 502 (gave up after 3 attempts)"
    assert info.value.retryable is True
    assert len(server.seen) == 3


@pytest.mark.parametrize(("status", "retryable"), [(404, False), (403, True)])
async def test_4xx_is_not_retried(
    status: int,
    retryable: bool,
    server: FileServer,
    make_store: Callable[..., ModelStore],
) -> None:
    server.files = {"model.gguf": DATA}
    server.plan = [("status", status)]
    with pytest.raises(ModelError) as info:
        await make_store().ensure("m", server.source("model.gguf"))
    assert info.value.message == f"GET {server.file_url('model.gguf')} -> {status}"
    assert info.value.retryable is retryable
    assert len(server.seen) == 1


async def test_a_stall_fails_the_attempt_and_the_retry_resumes(
    server: FileServer, make_store: Callable[..., ModelStore]
) -> None:
    server.files = {"model.gguf": DATA}
    server.plan = [("stall", 100_000)]
    store = make_store(stall_timeout_s=0.3)
    loop = asyncio.get_running_loop()
    started = loop.time()
    paths = await store.ensure("m", server.source("model.gguf"))
    assert loop.time() - started < 2.0
    assert paths["model.gguf"].read_bytes() == DATA
    first, second = server.ranges()
    assert first is None
    assert second is not None and second != "bytes=0-" and second.startswith("bytes=")


async def test_stalls_without_progress_give_up_with_a_clear_error(
    server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    server.files = {"model.gguf": DATA}
    server.plan = [("stall", 0)] * 2
    store = make_store(stall_timeout_s=0.3, max_attempts=2)
    with pytest.raises(ModelError) as info:
        await store.ensure("m", server.source("model.gguf"))
    assert info.value.message == (
        f"stalled: no bytes from {server.file_url('model.gguf')} for 0.3 s (at byte 0)"
        " (gave up after 2 attempts)"
    )
    assert info.value.retryable is True
    assert len(server.seen) == 2


async def test_connection_refused_is_a_retryable_request_error(
    make_store: Callable[..., ModelStore],
) -> None:
    store = make_store(max_attempts=2)
    with pytest.raises(ModelError) as info:
        await store.ensure("m", one_file("http://127.0.0.1:9/model.gguf"))
    assert info.value.message.startswith("request error: GET http://127.0.0.1:9/model.gguf: ")
    assert info.value.message.endswith("(gave up after 2 attempts)")
    assert info.value.retryable is True


# -- disk ------------------------------------------------------------------------------


async def test_disk_preflight_refuses_when_space_is_short(
    server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    server.files = {"model.gguf": DATA}
    probed: list[Path] = []

    def free_space(path: Path) -> int:
        probed.append(path)
        return 1000

    with pytest.raises(ModelError) as info:
        await make_store(free_space=free_space).ensure(
            "m", server.source("model.gguf", approx=True)
        )
    assert info.value.message == (
        "not enough disk space for model.gguf: need ~330000 bytes (declared 300000 + 10% "
        "headroom) but only 1000 bytes are free on the models filesystem — free up space "
        "or move models_root"
    )
    assert info.value.retryable is True
    assert probed == [tmp_path / "models" / "sd-cpp" / "m"]
    assert server.seen == []


async def test_disk_preflight_counts_the_partial_already_on_disk(
    server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    server.files = {"model.gguf": DATA}
    folder = tmp_path / "models" / "sd-cpp" / "m"
    folder.mkdir(parents=True)
    (folder / "model.gguf.part").write_bytes(DATA[:200_000])
    store = make_store(free_space=lambda _path: 130_000)  # needs 330 000 - 200 000
    paths = await store.ensure("m", server.source("model.gguf", approx=True))
    assert paths["model.gguf"].read_bytes() == DATA


async def test_a_failing_disk_probe_skips_the_preflight(
    server: FileServer,
    make_store: Callable[..., ModelStore],
    caplog: pytest.LogCaptureFixture,
) -> None:
    server.files = {"model.gguf": DATA}

    def broken(_path: Path) -> int:
        raise PermissionError(13, "Permission denied")

    with caplog.at_level(logging.WARNING, logger="studio_worker.models.store"):
        paths = await make_store(free_space=broken).ensure(
            "m", server.source("model.gguf", approx=True)
        )
    assert paths["model.gguf"].read_bytes() == DATA
    assert any("skipping the preflight" in r.getMessage() for r in caplog.records)


async def test_disk_full_while_writing_keeps_the_partial_and_resumes_later(
    server: FileServer,
    make_store: Callable[..., ModelStore],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    server.files = {"model.gguf": DATA}
    real_write = store_module._write
    calls = 0

    def filling_write(fh: BinaryIO, data: bytes) -> None:
        nonlocal calls
        calls += 1
        if calls > 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_write(fh, data)

    monkeypatch.setattr(store_module, "_write", filling_write)
    store = make_store()
    with pytest.raises(ModelError) as info:
        await store.ensure("m", server.source("model.gguf"))
    part = tmp_path / "models" / "sd-cpp" / "m" / "model.gguf.part"
    kept = part.stat().st_size
    assert 0 < kept < len(DATA)
    assert info.value.message.startswith(
        f"disk full while writing model.gguf: {kept} bytes are kept in {part}"
    )
    assert info.value.retryable is True
    assert len(server.seen) == 1  # a full disk is not retried in a loop

    monkeypatch.setattr(store_module, "_write", real_write)
    paths = await store.ensure("m", server.source("model.gguf"))
    assert paths["model.gguf"].read_bytes() == DATA
    assert server.ranges()[-1] == f"bytes={kept}-"


# -- concurrency -----------------------------------------------------------------------


async def test_concurrent_ensure_of_one_file_downloads_it_once(
    server: FileServer, make_store: Callable[..., ModelStore]
) -> None:
    server.files = {"model.gguf": DATA}
    server.plan = [("slow", 4, 0.02)]
    store = make_store()
    results = await asyncio.gather(
        *(store.ensure("m", server.source("model.gguf")) for _ in range(5))
    )
    assert len(server.seen) == 1
    assert all(r == results[0] for r in results)
    assert results[0]["model.gguf"].read_bytes() == DATA


async def test_different_files_download_side_by_side(
    server: FileServer, make_store: Callable[..., ModelStore]
) -> None:
    server.files = {"a.gguf": DATA, "b.gguf": OTHER}
    server.plan = [("stall", 1000), ("stall", 1000)]
    store = make_store()
    # Both first requests stall until released: they can only both be seen at once if
    # the two downloads run concurrently.
    task_a = asyncio.create_task(store.ensure("a", server.source("a.gguf")))
    task_b = asyncio.create_task(store.ensure("b", server.source("b.gguf")))
    for _ in range(200):
        if len(server.seen) == 2:
            break
        await asyncio.sleep(0.01)
    assert len(server.seen) == 2
    server.release.set()
    a, b = await asyncio.gather(task_a, task_b)
    assert a["a.gguf"].read_bytes() == DATA and b["b.gguf"].read_bytes() == OTHER


# -- progress --------------------------------------------------------------------------


async def test_progress_reports_increasing_bytes_and_one_final_report(
    server: FileServer,
    make_store: Callable[..., ModelStore],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(store_module, "PROGRESS_INTERVAL_S", 0.0)
    server.files = {"model.gguf": DATA}
    server.plan = [("slow", 6, 0.01)]
    per_call: list[DownloadProgress] = []
    global_: list[DownloadProgress] = []
    store = make_store(on_progress=global_.append)
    await store.ensure("my-model", server.source("model.gguf"), per_call.append)

    assert per_call == global_
    assert len(per_call) >= 4
    dones = [p.done for p in per_call]
    assert dones == sorted(dones) and dones[0] == 0
    assert [p.finished for p in per_call] == [False] * (len(per_call) - 1) + [True]
    last = per_call[-1]
    assert (last.model, last.filename, last.done, last.total) == (
        "my-model",
        "model.gguf",
        len(DATA),
        len(DATA),
    )
    assert last.eta_s == 0.0 and last.rate_bps > 0
    assert any(p.eta_s is not None and p.eta_s > 0 for p in per_call[1:-1])


async def test_progress_is_throttled(
    server: FileServer, make_store: Callable[..., ModelStore]
) -> None:
    server.files = {"model.gguf": DATA}
    server.plan = [("slow", 30, 0.01)]  # ~0.3 s, 30+ chunks
    seen: list[DownloadProgress] = []
    await make_store().ensure("m", server.source("model.gguf"), seen.append)
    assert 2 <= len(seen) <= 5
    assert seen[-1].finished and seen[-1].done == len(DATA)


async def test_a_failed_download_still_sends_a_finished_report(
    server: FileServer, make_store: Callable[..., ModelStore]
) -> None:
    server.files = {"model.gguf": DATA}
    server.plan = ["wrong"]
    seen: list[DownloadProgress] = []
    with pytest.raises(ModelError):
        await make_store().ensure("m", server.source("model.gguf"), seen.append)
    assert seen[-1].finished is True
    assert sum(p.finished for p in seen) == 1


async def test_progress_drives_the_status_board(
    server: FileServer, make_store: Callable[..., ModelStore]
) -> None:
    server.files = {"model.gguf": DATA}
    server.plan = [("stall", 100_000)]
    status = StatusStore()
    store = make_store(
        on_progress=lambda p: status.download_progress(
            p.model, p.filename, p.done, p.total, p.rate_bps, p.eta_s, p.finished
        )
    )
    task = asyncio.create_task(store.ensure("m", server.source("model.gguf")))
    for _ in range(200):
        if status.snapshot().downloads:
            break
        await asyncio.sleep(0.01)
    (shown,) = status.snapshot().to_json()["downloads"]
    assert (shown["model"], shown["filename"], shown["bytesTotal"]) == (
        "m",
        "model.gguf",
        len(DATA),
    )
    server.release.set()
    await task
    assert status.snapshot().downloads == ()


async def test_a_broken_progress_callback_does_not_break_the_download(
    server: FileServer, make_store: Callable[..., ModelStore]
) -> None:
    server.files = {"model.gguf": DATA}

    def broken(_p: DownloadProgress) -> None:
        raise RuntimeError("ui went away")

    paths = await make_store().ensure("m", server.source("model.gguf"), broken)
    assert paths["model.gguf"].read_bytes() == DATA


# -- cached / remove -------------------------------------------------------------------


async def test_cached_lists_models_files_and_partials(
    server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    server.files = {"model.gguf": DATA, "vae.safetensors": OTHER}
    store = make_store()
    assert store.cached() == []
    await store.ensure("org/img", server.source("model.gguf", "vae.safetensors"))
    await store.ensure("chat", server.source("model.gguf", engine="llama-cpp"))
    partial_dir = tmp_path / "models" / "llama-cpp" / "half"
    partial_dir.mkdir()
    (partial_dir / "big.gguf.part").write_bytes(b"x" * 10)
    (tmp_path / "models" / "bin").mkdir()
    (tmp_path / "models" / "bin" / "sd-cli").write_bytes(b"binary")
    (tmp_path / "models" / "llm").mkdir()
    (tmp_path / "models" / "llm" / "old.gguf").write_bytes(b"old")

    listing = [(m.engine, m.model, m.files, m.partials, m.size) for m in store.cached()]
    assert listing == [
        ("llama-cpp", "chat", (CachedFile("model.gguf", len(DATA)),), (), len(DATA)),
        ("llama-cpp", "half", (), (CachedFile("big.gguf", 10),), 10),
        (
            "sd-cpp",
            "org_img",
            (CachedFile("model.gguf", len(DATA)), CachedFile("vae.safetensors", len(OTHER))),
            (),
            len(DATA) + len(OTHER),
        ),
    ]


async def test_remove_frees_the_folder_and_reports_the_bytes(
    server: FileServer, make_store: Callable[..., ModelStore], tmp_path: Path
) -> None:
    server.files = {"model.gguf": DATA, "vae.safetensors": OTHER}
    store = make_store()
    await store.ensure("org/img", server.source("model.gguf", "vae.safetensors"))
    assert store.remove("sd-cpp", "org/img") == len(DATA) + len(OTHER)
    assert store.cached() == []
    assert not (tmp_path / "models" / "sd-cpp").exists()  # the empty engine dir goes too

    with pytest.raises(ModelNotCached) as info:
        store.remove("sd-cpp", "org/img")
    assert info.value.message.startswith('model "org/img" for engine "sd-cpp" is not cached')


async def test_remove_refuses_while_downloading(
    server: FileServer, make_store: Callable[..., ModelStore]
) -> None:
    server.files = {"model.gguf": DATA}
    server.plan = [("stall", 1000)]
    store = make_store()
    task = asyncio.create_task(store.ensure("m", server.source("model.gguf")))
    for _ in range(200):
        if server.seen:
            break
        await asyncio.sleep(0.01)
    with pytest.raises(ModelError, match="is downloading right now"):
        store.remove("sd-cpp", "m")
    server.release.set()
    await task
    assert store.remove("sd-cpp", "m") == len(DATA)
