"""The release side of self-update: build/tuf_repo.py makes and keeps the TUF repository.

Repositories are generated in a temporary directory (metadata expires); clients are
python-tuf's own, over a loopback HTTP server."""

from __future__ import annotations

import gzip
import http.server
import io
import json
import random
import shutil
import sys
import tarfile
import threading
import zipfile
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("tufup", reason="the update repository needs the `update` extra (tufup)")

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "build"))
import tuf_repo

LINUX = "x86_64-unknown-linux-gnu"
MAC = "aarch64-apple-darwin"
BLOB = bytes(range(256)) * 256  # 64 KiB shared by every build


def release(out: Path, version: str, target: str = LINUX, *, extra: bytes = b"") -> Path:
    out.mkdir(parents=True, exist_ok=True)
    archive = out / f"studio-worker-{version}-{target}.tar.gz"
    top = f"studio-worker-{version}"
    with tarfile.open(archive, "w:gz") as tar:
        for name, data, mode in (
            ("", None, 0o755),
            ("studio-worker", f"#!/bin/sh\necho {version}\n".encode(), 0o755),
            ("lib/libengine.so", BLOB + version.encode() + extra, 0o644),
        ):
            info = tarfile.TarInfo(f"{top}/{name}".rstrip("/"))
            info.mode, info.mtime = mode, 1_700_000_000
            if data is None:
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return archive


@pytest.fixture
def work(tmp_path: Path) -> Path:
    workdir = tmp_path / "publish"
    tuf_repo.init_repository(workdir, root_key_dir=tmp_path / "offline")
    return workdir


def signed(workdir: Path, role: str) -> dict[str, Any]:
    path = workdir / "repository" / "metadata" / f"{role}.json"
    return json.loads(path.read_text())["signed"]  # type: ignore[no-any-return]


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def serve() -> Iterator[Any]:
    servers: list[http.server.ThreadingHTTPServer] = []

    def start(directory: Path) -> str:
        def handler(*args: Any) -> _Quiet:
            return _Quiet(*args, directory=str(directory))

        server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_port}/"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def client_refresh(client_dir: Path, url: str) -> Any:
    """python-tuf's client: verifies the whole chain from the root it trusts."""
    from tuf.ngclient.updater import Updater

    updater = Updater(metadata_dir=str(client_dir), metadata_base_url=url + "metadata/")
    updater.refresh()
    return updater


def trusting_root_1(tmp_path: Path, workdir: Path) -> Path:
    client = tmp_path / "client"
    client.mkdir()
    shutil.copy(workdir / "repository" / "metadata" / "1.root.json", client / "root.json")
    return client


# ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "version", "target"),
    [
        ("studio-worker-1.2.3-x86_64-unknown-linux-gnu.tar.gz", "1.2.3", LINUX),
        ("studio-worker-1.2.3-rc.1-aarch64-apple-darwin.tar.gz", "1.2.3-rc.1", MAC),
        ("studio-worker-0.6.0-x86_64-pc-windows-msvc.zip", "0.6.0", "x86_64-pc-windows-msvc"),
        (
            "studio-worker-2.0.0-x86_64-unknown-linux-gnu-cuda.tar.gz",
            "2.0.0",
            "x86_64-unknown-linux-gnu-cuda",
        ),
    ],
)
def test_release_names(name: str, version: str, target: str) -> None:
    assert tuf_repo.parse_release_name(name) == (version, target)


def test_a_name_that_is_not_a_release_is_refused() -> None:
    with pytest.raises(tuf_repo.RepoError, match="not a release archive name"):
        tuf_repo.parse_release_name("studio-worker-1.0.0-sparc-sun-solaris.tar.gz")


def test_init_keeps_the_root_key_offline(tmp_path: Path, work: Path) -> None:
    keystore = work / "keystore"
    assert sorted(p.name for p in keystore.iterdir()) == [
        "root.pub",
        "snapshot",
        "snapshot.pub",
        "targets",
        "targets.pub",
        "timestamp",
        "timestamp.pub",
    ]
    assert sorted(p.name for p in (tmp_path / "offline").iterdir()) == ["root", "root.pub"]
    root = signed(work, "root")
    assert {role: spec["threshold"] for role, spec in root["roles"].items()} == dict.fromkeys(
        ("root", "targets", "snapshot", "timestamp"), 1
    )
    assert root["consistent_snapshot"] is False
    expires = tuf_repo.expires(work)
    now = datetime.now(UTC)
    assert timedelta(days=364) < expires["root"] - now <= timedelta(days=365)
    assert timedelta(hours=23) < expires["timestamp"] - now <= timedelta(days=1)
    with pytest.raises(tuf_repo.RepoError, match="already initialised"):
        tuf_repo.init_repository(work)


def test_root_can_need_two_of_three_keys(tmp_path: Path, serve: Any) -> None:
    work = tmp_path / "publish"
    tuf_repo.init_repository(work, root_key_dir=tmp_path / "offline", root_keys=3, root_threshold=2)
    root = signed(work, "root")
    assert root["roles"]["root"]["threshold"] == 2
    assert len(root["roles"]["root"]["keyids"]) == 3
    assert sorted(p.name for p in (tmp_path / "offline").iterdir() if p.suffix != ".pub") == [
        "root",
        "root-2",
        "root-3",
    ]
    url = serve(work / "repository")
    client_refresh(trusting_root_1(tmp_path, work), url)


def test_add_repacks_the_build_folder_reproducibly(tmp_path: Path, work: Path) -> None:
    archive = release(tmp_path / "rel", "1.0.0")
    added = tuf_repo.add_release(work, archive)
    assert added.archive.name == f"studio-worker-{LINUX}-1.0.0.tar.gz"
    assert added.patch is None  # the first release of its target
    with tarfile.open(added.archive) as tar:
        members = {m.name: m for m in tar.getmembers()}
    assert sorted(members) == ["lib/libengine.so", "studio-worker"]
    assert members["studio-worker"].mode & 0o111
    assert {(m.uid, m.gid, m.uname) for m in members.values()} == {(0, 0, "")}
    first = added.archive.read_bytes()
    again = tmp_path / "again.tar.gz"
    tuf_repo._repack(archive, again)
    assert again.read_bytes() == first  # same input, same bytes (gzip time zeroed)
    assert gzip.decompress(first)  # a plain gzip stream
    targets = signed(work, "targets")["targets"]
    assert targets[added.archive.name]["length"] == len(first)
    assert targets[added.archive.name]["custom"]["user"] == {"release": archive.name}


def test_a_windows_zip_becomes_a_tar_gz_target(tmp_path: Path, work: Path) -> None:
    archive = tmp_path / "studio-worker-1.0.0-x86_64-pc-windows-msvc.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("studio-worker-1.0.0/studio-worker.exe", b"MZ fake")
        zf.writestr("studio-worker-1.0.0/python311.dll", b"dll")
    added = tuf_repo.add_release(work, archive)
    assert added.archive.name == "studio-worker-x86_64-pc-windows-msvc-1.0.0.tar.gz"
    with tarfile.open(added.archive) as tar:
        assert sorted(tar.getnames()) == ["python311.dll", "studio-worker.exe"]


def test_a_patch_is_published_when_it_is_smaller(tmp_path: Path, work: Path) -> None:
    rel = tmp_path / "rel"
    tuf_repo.add_release(work, release(rel, "1.0.0"))
    small = tuf_repo.add_release(work, release(rel, "1.1.0"))
    assert small.patch is not None and small.patch_size is not None
    assert small.patch_size < small.archive_size * tuf_repo.PATCH_MAX_RATIO
    custom = signed(work, "targets")["targets"][small.patch.name]["custom"]["tufup"]
    assert set(custom) == {"tar_size", "tar_hash", "tar_hash_algorithm"}
    # A release whose bytes changed throughout: the patch is not worth it.
    noise = random.Random(1).randbytes(len(BLOB) * 2)
    big = tuf_repo.add_release(work, release(rel, "2.0.0", extra=noise))
    assert big.patch is None
    assert not (work / "repository" / "targets" / f"studio-worker-{LINUX}-2.0.0.patch").exists()


def test_targets_of_different_triples_live_side_by_side(tmp_path: Path, work: Path) -> None:
    rel = tmp_path / "rel"
    added = tuf_repo.add_releases(
        work,
        [release(rel, "1.0.0", LINUX), release(rel, "1.0.0", MAC)],
    )
    assert [a.app for a in added] == [f"studio-worker-{LINUX}", f"studio-worker-{MAC}"]
    nxt = tuf_repo.add_releases(work, [release(rel, "1.1.0", LINUX), release(rel, "1.1.0", MAC)])
    assert all(a.patch is not None for a in nxt)  # each from its own target's previous
    assert sorted(signed(work, "targets")["targets"]) == sorted(
        [
            f"studio-worker-{LINUX}-1.0.0.tar.gz",
            f"studio-worker-{LINUX}-1.1.0.tar.gz",
            f"studio-worker-{LINUX}-1.1.0.patch",
            f"studio-worker-{MAC}-1.0.0.tar.gz",
            f"studio-worker-{MAC}-1.1.0.tar.gz",
            f"studio-worker-{MAC}-1.1.0.patch",
        ]
    )


def test_a_release_must_be_newer_than_the_last(tmp_path: Path, work: Path) -> None:
    rel = tmp_path / "rel"
    tuf_repo.add_release(work, release(rel, "1.1.0"))
    for version in ("1.1.0", "1.0.9"):
        with pytest.raises(tuf_repo.RepoError, match="must be newer"):
            tuf_repo.add_release(work, release(rel, version))


def test_a_failed_signing_leaves_the_repository_as_it_was(tmp_path: Path, work: Path) -> None:
    tuf_repo.add_release(work, release(tmp_path / "rel", "1.0.0"))
    meta = work / "repository" / "metadata"
    before = {p.name: p.read_bytes() for p in meta.iterdir()}
    targets_before = sorted(p.name for p in (work / "repository" / "targets").iterdir())
    (work / "keystore" / "timestamp").unlink()  # targets and snapshot still sign
    with pytest.raises(tuf_repo.RepoError, match="timestamp"):
        tuf_repo.add_release(work, release(tmp_path / "rel", "1.1.0"))
    assert {p.name: p.read_bytes() for p in meta.iterdir()} == before
    assert sorted(p.name for p in (work / "repository" / "targets").iterdir()) == targets_before


def test_verify_catches_what_a_client_would_refuse(work: Path) -> None:
    tuf_repo.verify(work)
    path = work / "repository" / "metadata" / "snapshot.json"
    doc = json.loads(path.read_text())
    doc["signed"]["expires"] = "2099-01-01T00:00:00Z"
    path.write_text(json.dumps(doc))
    with pytest.raises(tuf_repo.RepoError, match="snapshot"):
        tuf_repo.verify(work)


def test_publishing_never_needs_the_root_key(tmp_path: Path, work: Path, serve: Any) -> None:
    tuf_repo.add_release(work, release(tmp_path / "rel", "1.0.0"))
    assert signed(work, "root")["version"] == 1
    updater = client_refresh(trusting_root_1(tmp_path, work), serve(work / "repository"))
    info = updater.get_targetinfo(f"studio-worker-{LINUX}-1.0.0.tar.gz")
    assert info is not None and info.length > 0


def test_refresh_re_signs_what_is_close_to_expiring(work: Path) -> None:
    before = {role: signed(work, role)["version"] for role in tuf_repo.ONLINE_ROLES}
    assert tuf_repo.refresh(work) == []  # all fresh
    in_20h = datetime.now(UTC) + timedelta(hours=20)  # timestamp past half its day
    assert tuf_repo.refresh(work, now=in_20h) == ["timestamp"]
    assert signed(work, "timestamp")["version"] == before["timestamp"] + 1
    assert signed(work, "snapshot")["version"] == before["snapshot"]
    in_5d = datetime.now(UTC) + timedelta(days=5)
    assert tuf_repo.refresh(work, now=in_5d) == ["snapshot", "timestamp"]
    assert tuf_repo.refresh(work, force=["targets"]) == ["targets"]
    # targets re-signed: snapshot and timestamp follow (they name its version)
    assert (
        signed(work, "snapshot")["meta"]["targets.json"]["version"]
        == (signed(work, "targets")["version"])
    )


def test_refresh_needs_only_the_metadata(tmp_path: Path, work: Path) -> None:
    """The scheduled refresh fetches metadata, never the (large) archives; an `add`
    still refuses to publish when a signed target is missing."""
    tuf_repo.add_release(work, release(tmp_path / "rel", "1.0.0"))
    targets = work / "repository" / "targets"
    for archive in targets.iterdir():
        archive.unlink()
    assert tuf_repo.refresh(work, force=["targets"]) == ["targets"]
    with pytest.raises(tuf_repo.RepoError, match="missing or not its signed length"):
        tuf_repo.add_release(work, release(tmp_path / "rel", "1.1.0"), patch=False)


def test_rotating_an_online_key(tmp_path: Path, work: Path, serve: Any) -> None:
    client = trusting_root_1(tmp_path, work)
    url = serve(work / "repository")
    client_refresh(client, url)
    old_keyid = signed(work, "root")["roles"]["targets"]["keyids"]
    name = tuf_repo.rotate_key(work, "targets", [tmp_path / "offline"])
    assert name == "targets-2"
    root = signed(work, "root")
    assert root["version"] == 2
    assert root["roles"]["targets"]["keyids"] != old_keyid
    assert (work / "repository" / "metadata" / "2.root.json").exists()
    # A worker that trusts root 1 follows the chain and accepts the new targets key.
    client_refresh(client, url)
    assert json.loads((client / "root.json").read_text())["signed"]["version"] == 2
    # Releases after the rotation sign with the new key only.
    tuf_repo.add_release(work, release(tmp_path / "rel", "1.0.0"))
    client_refresh(client, url)


def test_rotating_the_root_key(tmp_path: Path, work: Path, serve: Any) -> None:
    client = trusting_root_1(tmp_path, work)
    url = serve(work / "repository")
    name = tuf_repo.rotate_key(work, "root", [tmp_path / "offline"])
    assert name == "root-2"
    assert (tmp_path / "offline" / "root-2").exists()
    assert not (work / "keystore" / "root-2").exists()  # the new private key stays offline
    two = json.loads((work / "repository" / "metadata" / "2.root.json").read_text())
    assert len(two["signatures"]) == 2  # old and new root keys
    client_refresh(client, url)
    tuf_repo.resign_root(work, [tmp_path / "offline"])
    assert signed(work, "root")["version"] == 3
    client_refresh(client, url)


def test_rotating_a_key_without_the_offline_root_key_is_refused(tmp_path: Path, work: Path) -> None:
    with pytest.raises(tuf_repo.RepoError, match="root"):
        tuf_repo.rotate_key(work, "targets", [])


def test_the_command_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    work = tmp_path / "cli"
    rel = tmp_path / "rel"
    offline = str(tmp_path / "o")
    assert tuf_repo.main(["--workdir", str(work), "init", "--root-key-dir", offline]) == 0
    assert tuf_repo.main(["--workdir", str(work), "add", str(release(rel, "1.0.0"))]) == 0
    assert tuf_repo.main(["--workdir", str(work), "add", str(release(rel, "1.1.0"))]) == 0
    assert tuf_repo.main(["--workdir", str(work), "refresh", "--force", "timestamp"]) == 0
    assert tuf_repo.main(["--workdir", str(work), "show"]) == 0
    out = capsys.readouterr().out
    assert f"added studio-worker-{LINUX}-1.1.0.tar.gz" in out and ", patch " in out
    assert "re-signed: timestamp" in out
    assert f'"studio-worker-{LINUX}-1.1.0.patch"' in out
    bogus = tmp_path / "something.tar.gz"
    bogus.write_bytes(b"")
    assert tuf_repo.main(["--workdir", str(work), "add", str(bogus)]) == 1
    assert "not a release archive name" in capsys.readouterr().err
