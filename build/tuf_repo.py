"""The update repository: TUF keys, signed metadata and the release archives (and patches).

Release side of the self-update (docs/update.md). One working directory holds

    <workdir>/repository/metadata/   root.json, N.root.json, targets.json, snapshot.json,
                                     timestamp.json      <- published as-is
    <workdir>/repository/targets/    studio-worker-<target>-<version>.tar.gz (+ .patch)
    <workdir>/keystore/              public keys of every role, private keys of the
                                     online roles (targets, snapshot, timestamp)
    <workdir>/.tufup-repo-config     tufup's repository settings (key names, thresholds,
                                     expiry days): kept with the keystore, not published

The root private key(s) live elsewhere (`--root-key-dir`: offline media): they are needed
only to create the repository, to rotate a key and to re-sign root before it expires.

Commands (run from anywhere; `python build/tuf_repo.py --help`):

    init      create the keys and the first signed metadata
    add       add release archives (studio-worker-<version>-<target>.tar.gz / .zip), a
              bsdiff patch from the previous release of the same target when it is smaller,
              and sign with the online keys
    refresh   re-sign what is close to expiring (timestamp daily; run it every few hours)
    rotate-key  replace the key of one role (root needs the offline root key directory)
    show      list the targets and the metadata expiry dates

Importable too: the tests build repositories in a temporary directory with these functions.
"""

from __future__ import annotations

import argparse
import contextlib
import gzip
import io
import json
import logging
import re
import shutil
import sys
import tarfile
import tempfile
import time
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

log = logging.getLogger("tuf_repo")

APP = "studio-worker"
ROLES = ("root", "targets", "snapshot", "timestamp")
ONLINE_ROLES = ("targets", "snapshot", "timestamp")
# Days each role's metadata stays valid after it is signed. The timestamp is the freeze
# guard: a worker refuses metadata older than this, so `refresh` must run well within it.
EXPIRATION_DAYS: dict[str, float] = {"root": 365, "targets": 30, "snapshot": 7, "timestamp": 1}
# Signatures each role needs. Root: one offline key by default; `init --root-keys 3
# --root-threshold 2` spreads it over three holders. The online roles sign in CI with one
# key each (a threshold above 1 there only adds keys that live in the same place).
THRESHOLDS: dict[str, int] = {"root": 1, "targets": 1, "snapshot": 1, "timestamp": 1}
# A patch is published only when it is smaller than this share of its archive (tufup's
# client falls back to the full archive above the same ratio).
PATCH_MAX_RATIO = 0.8
REPO_DIR = "repository"
KEYS_DIR = "keystore"

TARGETS = (
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "x86_64-apple-darwin",
    "aarch64-apple-darwin",
    "x86_64-pc-windows-msvc",
    "aarch64-pc-windows-msvc",
)
_TARGET_RE = "|".join(re.escape(t) for t in TARGETS)
_RELEASE_RE = re.compile(
    rf"^{re.escape(APP)}-(?P<version>.+?)-(?P<target>(?:{_TARGET_RE})(?:-cuda)?)"
    r"(?P<ext>\.tar\.gz|\.zip)$"
)


class RepoError(Exception):
    """A refusal of this tool: the message says what to do."""


@dataclass(frozen=True)
class Release:
    version: str
    target: str
    path: Path


@dataclass(frozen=True)
class Added:
    app: str
    version: str
    archive: Path
    archive_size: int
    patch: Path | None
    patch_size: int | None


def parse_release_name(name: str) -> tuple[str, str]:
    """`studio-worker-1.2.0-rc.1-x86_64-unknown-linux-gnu.tar.gz` -> (version, target)."""
    match = _RELEASE_RE.match(name)
    if match is None:
        raise RepoError(
            f"{name}: not a release archive name (studio-worker-<version>-<target>.tar.gz|.zip"
            f" with a target among {', '.join(TARGETS)}, optionally -cuda); pass --version"
            " and --target"
        )
    return match["version"], match["target"]


def app_name(target: str) -> str:
    """The update name of one build target: archives of other targets never mix."""
    return f"{APP}-{target}"


def target_filename(target: str, version: str, *, patch: bool = False) -> str:
    return f"{app_name(target)}-{version}{'.patch' if patch else '.tar.gz'}"


@contextlib.contextmanager
def _in(workdir: Path) -> Iterator[None]:
    # tufup keeps its repository settings in the working directory, paths relative to it.
    with contextlib.chdir(workdir):
        yield


def _load(workdir: Path) -> Any:
    from tufup.repo import Repository  # type: ignore[import-untyped]

    if not (workdir / ".tufup-repo-config").exists():
        raise RepoError(f"{workdir}: no update repository here (run `init` first)")
    with _in(workdir):
        for sub in (KEYS_DIR, f"{REPO_DIR}/metadata", f"{REPO_DIR}/targets"):
            (workdir / sub).mkdir(parents=True, exist_ok=True)  # tufup prompts otherwise
        return Repository.from_config()


def _private_dirs(workdir: Path, extra: Sequence[Path]) -> list[Path]:
    return [workdir / KEYS_DIR, *(Path(p).resolve() for p in extra)]


def init_repository(
    workdir: Path,
    *,
    root_key_dir: Path | None = None,
    root_keys: int = 1,
    root_threshold: int = 1,
    encrypt_root: bool = False,
    expiration_days: dict[str, float] | None = None,
) -> Path:
    """Create the keys and sign the first metadata; returns the repository directory.

    With `root_key_dir`, the root private key(s) are moved there after signing (the
    keystore keeps their public halves); without it they stay in the keystore, which
    suits tests and a first trial, never a published repository.
    """
    from tufup.repo import Repository

    workdir = Path(workdir).resolve()
    if (workdir / REPO_DIR / "metadata" / "root.json").exists():
        raise RepoError(f"{workdir}: already initialised (rotate keys with `rotate-key`)")
    if not 1 <= root_threshold <= root_keys:
        raise RepoError("the root threshold must be between 1 and the number of root keys")
    workdir.mkdir(parents=True, exist_ok=True)
    root_names = ["root"] + [f"root-{i}" for i in range(2, root_keys + 1)]
    key_map = {"root": root_names, **{role: [role] for role in ONLINE_ROLES}}
    thresholds = {**THRESHOLDS, "root": root_threshold}
    with _in(workdir):
        repo = Repository(
            app_name=APP,
            repo_dir=REPO_DIR,
            keys_dir=KEYS_DIR,
            key_map=key_map,
            encrypted_keys=root_names if encrypt_root else [],
            expiration_days={**EXPIRATION_DAYS, **(expiration_days or {})},
            thresholds=thresholds,
        )
        repo.initialize()  # creates keys, signs root/targets/snapshot/timestamp version 1
        repo.save_config()
    if root_key_dir is not None:
        root_key_dir = Path(root_key_dir).resolve()
        root_key_dir.mkdir(parents=True, exist_ok=True)
        for name in root_names:
            shutil.move(str(workdir / KEYS_DIR / name), root_key_dir / name)
            shutil.copy2(workdir / KEYS_DIR / f"{name}.pub", root_key_dir / f"{name}.pub")
    return workdir / REPO_DIR


def _repack(archive: Path, dst: Path) -> None:
    """The release archive's top-level folder as the root of a reproducible .tar.gz.

    Members are sorted, owners cleared and gzip's timestamp zeroed, so two builds of the
    same files give the same bytes and bsdiff patches stay small. Modes (the executable
    bit) are kept.
    """
    entries: list[tuple[str, bytes | None, int, float, str | None]] = []
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive) as zf:
            for zinfo in zf.infolist():
                mode = (zinfo.external_attr >> 16) & 0o7777
                mtime = time.mktime((*zinfo.date_time, 0, 0, -1))
                if zinfo.is_dir():
                    entries.append((zinfo.filename.rstrip("/"), None, mode or 0o755, mtime, None))
                else:
                    entries.append((zinfo.filename, zf.read(zinfo), mode or 0o644, mtime, None))
    else:
        with tarfile.open(archive, "r:*") as tf:
            for member in tf.getmembers():
                if member.isdir():
                    entries.append((member.name, None, member.mode, member.mtime, None))
                elif member.issym():
                    entries.append((member.name, None, member.mode, member.mtime, member.linkname))
                elif member.isfile():
                    handle = tf.extractfile(member)
                    assert handle is not None
                    entries.append((member.name, handle.read(), member.mode, member.mtime, None))
    names = [e[0].strip("/") for e in entries if e[0].strip("/") not in ("", ".")]
    tops = {n.split("/", 1)[0] for n in names}
    if len(tops) != 1 or not any("/" in n for n in names):
        raise RepoError(f"{archive.name}: expected one top-level folder holding the build")
    (top,) = tops
    with (
        open(dst, "wb") as raw,
        gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0) as gz,
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as out,
    ):
        for name, data, mode, mtime, link in sorted(entries, key=lambda e: e[0]):
            rel = name.strip("/")
            if rel == top or not rel.startswith(top + "/"):
                continue
            info = tarfile.TarInfo(rel[len(top) + 1 :])
            info.mode, info.mtime = mode, int(mtime)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            if link is not None:
                info.type, info.linkname = tarfile.SYMTYPE, link
                out.addfile(info)
            elif data is None:
                info.type = tarfile.DIRTYPE
                out.addfile(info)
            else:
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))


def _archives_of(roles: Any, app: str) -> list[Any]:
    from tufup.common import TargetMeta  # type: ignore[import-untyped]

    metas = [TargetMeta(target_path=key) for key in roles.targets.signed.targets]
    return sorted(m for m in metas if m.is_archive and m.name == app)


def _add(
    repo: Any,
    workdir: Path,
    archive: Path,
    *,
    version: str | None = None,
    target: str | None = None,
    patch: bool = True,
    required: bool = False,
) -> Added:
    from packaging.version import InvalidVersion, Version
    from tufup.common import Patcher

    archive = Path(archive).resolve()
    if version is None or target is None:
        parsed_version, parsed_target = parse_release_name(archive.name)
        version, target = version or parsed_version, target or parsed_target
    try:
        new_version = Version(version)
    except InvalidVersion:
        raise RepoError(f"{version!r} is not a version") from None
    app = app_name(target)
    existing = _archives_of(repo.roles, app)
    if existing and existing[-1].version >= new_version:
        raise RepoError(
            f"{app} {version}: the repository already holds {existing[-1].version}; a release"
            " must be newer than the last one of its target"
        )
    targets_dir = workdir / REPO_DIR / "targets"
    dst = targets_dir / target_filename(target, version)
    _repack(archive, dst)
    with _in(workdir):
        repo.roles.add_or_update_target(
            local_path=dst,
            custom={"user": {"release": archive.name}, "tufup": {"required": required}},
        )
    added_patch: Path | None = None
    patch_size: int | None = None
    if patch and existing:
        previous = targets_dir / existing[-1].path
        patch_path = targets_dir / target_filename(target, version, patch=True)
        if previous.exists():
            tar_meta = Patcher.diff_and_hash(src_path=previous, dst_path=dst, patch_path=patch_path)
            patch_size = patch_path.stat().st_size
            if patch_size < PATCH_MAX_RATIO * dst.stat().st_size:
                with _in(workdir):
                    repo.roles.add_or_update_target(
                        local_path=patch_path, custom={"user": None, "tufup": tar_meta}
                    )
                added_patch = patch_path
            else:
                log.info("patch %s not kept: %d bytes", patch_path.name, patch_size)
                patch_path.unlink()
        else:
            log.warning("no local copy of %s: no patch for %s", previous.name, dst.name)
    return Added(app, version, dst, dst.stat().st_size, added_patch, patch_size)


@contextlib.contextmanager
def _all_or_nothing(workdir: Path) -> Iterator[None]:
    """Metadata, tufup's settings and the targets directory as they were, unless the block
    ends cleanly: a failed signing never leaves a half-published repository."""
    meta = workdir / REPO_DIR / "metadata"
    targets = workdir / REPO_DIR / "targets"
    config = workdir / ".tufup-repo-config"
    before = set(targets.iterdir()) if targets.is_dir() else set()
    with tempfile.TemporaryDirectory() as tmp:
        saved = Path(tmp)
        shutil.copytree(meta, saved / "metadata")
        if config.exists():
            shutil.copy2(config, saved / "config")
        try:
            yield
        except BaseException:
            shutil.rmtree(meta)
            shutil.copytree(saved / "metadata", meta)
            if (saved / "config").exists():
                shutil.copy2(saved / "config", config)
            for path in set(targets.iterdir()) - before:
                path.unlink()
            raise


def _publish(
    repo: Any, workdir: Path, key_dirs: Sequence[Path], *, target_files: bool = True
) -> None:
    """Sign every changed role with the keys found in the keystore and `key_dirs`, then
    check the result as a client would (call inside `_all_or_nothing`)."""
    with _in(workdir):
        try:
            repo.publish_changes(private_key_dirs=_private_dirs(workdir, key_dirs))
        except Exception as exc:
            if "No private keys found" in str(exc):
                raise RepoError(f"{exc} (pass the directory holding it)") from None
            raise
    verify(workdir, target_files=target_files)


def verify(workdir: Path, *, target_files: bool = True) -> None:
    """What a client will check: the root chain (each version signed by the threshold of
    the previous one and of itself), every role signed by its threshold, versions that
    name each other, and (`target_files`) every target file present with its signed
    length. `refresh` changes no target: it runs with the metadata alone.

    tufup signs a changed root with whatever keys it finds, including a key just revoked
    from another role, and does not count them against root's threshold: this is where
    such a root is caught before it is published.
    """
    from tuf.api.exceptions import UnsignedMetadataError
    from tuf.api.metadata import Metadata, Root, Snapshot, Targets, Timestamp  # type: ignore[attr-defined]

    meta_dir = Path(workdir) / REPO_DIR / "metadata"
    numbered = sorted((int(p.name.split(".", 1)[0]), p) for p in meta_dir.glob("*.root.json"))

    def check(delegator: Root, role: str, md: Metadata[Any]) -> None:
        delegator.verify_delegate(role, md.signed_bytes, md.signatures)

    try:
        trusted = Metadata[Root].from_file(str(numbered[0][1]))
        check(trusted.signed, Root.type, trusted)
        for _, path in numbered[1:]:
            nxt = Metadata[Root].from_file(str(path))
            check(trusted.signed, Root.type, nxt)
            check(nxt.signed, Root.type, nxt)
            trusted = nxt
        root = trusted.signed
        latest = Metadata[Root].from_file(str(meta_dir / "root.json"))
        if latest.signed.version != root.version:
            raise RepoError(f"root.json is version {latest.signed.version}, not {root.version}")
        targets = Metadata[Targets].from_file(str(meta_dir / "targets.json"))
        snapshot = Metadata[Snapshot].from_file(str(meta_dir / "snapshot.json"))
        timestamp = Metadata[Timestamp].from_file(str(meta_dir / "timestamp.json"))
        check(root, Targets.type, targets)
        check(root, Snapshot.type, snapshot)
        check(root, Timestamp.type, timestamp)
    except UnsignedMetadataError as exc:
        raise RepoError(
            f"refusing to publish: {exc} (is every key of that role at hand?)"
        ) from None
    if snapshot.signed.meta["targets.json"].version != targets.signed.version:
        raise RepoError("snapshot does not name the current targets version")
    if timestamp.signed.snapshot_meta.version != snapshot.signed.version:
        raise RepoError("timestamp does not name the current snapshot version")
    targets_dir = Path(workdir) / REPO_DIR / "targets"
    for name, info in targets.signed.targets.items() if target_files else ():
        path = targets_dir / name
        if not path.is_file() or path.stat().st_size != info.length:
            raise RepoError(f"target {name} is missing or not its signed length")


def add_releases(
    workdir: Path, archives: Sequence[Path], key_dirs: Sequence[Path] = (), **kwargs: Any
) -> list[Added]:
    """Add release archives (any targets), each with a patch from the previous release of
    its target when that is smaller, then sign with the online keys (and `key_dirs`)."""
    workdir = Path(workdir).resolve()
    repo = _load(workdir)
    with _all_or_nothing(workdir):
        added = [_add(repo, workdir, archive, **kwargs) for archive in archives]
        _publish(repo, workdir, key_dirs)
    return added


def add_release(
    workdir: Path,
    archive: Path,
    key_dirs: Sequence[Path] = (),
    *,
    version: str | None = None,
    target: str | None = None,
    patch: bool = True,
    required: bool = False,
) -> Added:
    """One archive; `version`/`target` override what its name says."""
    (added,) = add_releases(
        workdir, [archive], key_dirs, version=version, target=target, patch=patch, required=required
    )
    return added


def expires(workdir: Path) -> dict[str, datetime]:
    """Each role's expiry, as signed in the repository."""
    from tuf.api.metadata import Metadata

    meta = Path(workdir) / REPO_DIR / "metadata"
    out = {}
    for role in ROLES:
        signed = Metadata.from_file(str(meta / f"{role}.json")).signed
        out[role] = signed.expires.replace(tzinfo=UTC)
    return out


def refresh(
    workdir: Path,
    key_dirs: Sequence[Path] = (),
    *,
    now: datetime | None = None,
    force: Sequence[str] = (),
    days: dict[str, float] | None = None,
) -> list[str]:
    """Re-sign the online roles that passed half of their lifetime (and those in `force`).

    Root is never re-signed here (it needs the offline key: `rotate-key` or `resign-root`);
    a warning says when it has less than 60 days left. `days` overrides the lifetime (the
    tests sign already-expired metadata with a negative one).
    """
    workdir = Path(workdir).resolve()
    now = now or datetime.now(UTC)
    repo = _load(workdir)
    lifetimes = {**repo.expiration_days, **(days or {})}
    current = expires(workdir)
    if current["root"] - now < timedelta(days=60):
        log.warning("root metadata expires %s: re-sign it with the offline key", current["root"])
    renewed = []
    for role in ONLINE_ROLES:
        half = timedelta(days=float(repo.expiration_days[role]) / 2)
        if role in force or current[role] - now < half:
            repo.refresh_expiration_date(role, days=lifetimes[role])
            _bump(repo, role)
            renewed.append(role)
    if renewed:
        with _all_or_nothing(workdir):
            _publish(repo, workdir, key_dirs, target_files=False)
    return renewed


def resign_root(workdir: Path, root_key_dirs: Sequence[Path]) -> None:
    """A new root version with a fresh expiry (the yearly offline ceremony)."""
    workdir = Path(workdir).resolve()
    repo = _load(workdir)
    _require_root_keys(repo, root_key_dirs)
    repo.refresh_expiration_date("root")
    _bump(repo, "root")
    with _all_or_nothing(workdir):
        _publish(repo, workdir, root_key_dirs)


def _bump(repo: Any, role: str) -> None:
    """A new version even when the new expiry equals the old one to the second (tufup only
    re-signs what changed)."""
    getattr(repo.roles, role).signed.version += 1


def _require_root_keys(repo: Any, root_key_dirs: Sequence[Path]) -> None:
    from tufup.repo import Keys

    dirs = [Path(d) for d in root_key_dirs if Path(d).is_dir()]
    found = [name for name in repo.key_map["root"] if dirs and Keys.find_private_key(name, dirs)]
    threshold = repo.roles.root.signed.roles["root"].threshold
    if len(found) < threshold:
        raise RepoError(
            f"root needs {threshold} of its keys ({', '.join(repo.key_map['root'])}); found"
            f" {len(found)} in {', '.join(map(str, root_key_dirs)) or 'no directory'}: pass"
            " the offline root key directory"
        )


def rotate_key(
    workdir: Path, role: str, root_key_dirs: Sequence[Path], *, new_key_dir: Path | None = None
) -> str:
    """Replace the (first) key of `role` by a new one; signs a new root version.

    Online roles get their new private key in the keystore; root gets it in `new_key_dir`
    (default: the first root key directory), its public half copied to the keystore.
    Needs the current root key(s) and, for root, signs with old and new. Returns the name
    of the new key.
    """
    from tufup.repo import Keys

    if role not in ROLES:
        raise RepoError(f"unknown role {role!r} (one of {', '.join(ROLES)})")
    workdir = Path(workdir).resolve()
    repo = _load(workdir)
    _require_root_keys(repo, root_key_dirs)
    old = repo.key_map[role][0]
    taken = {p.stem for p in (workdir / KEYS_DIR).glob("*.pub")}
    n = 2
    while f"{role}-{n}" in taken:
        n += 1
    new_name = f"{role}-{n}"
    key_home = (
        Path(new_key_dir or root_key_dirs[0]).resolve() if role == "root" else workdir / KEYS_DIR
    )
    key_home.mkdir(parents=True, exist_ok=True)
    created = [
        key_home / new_name,
        key_home / f"{new_name}.pub",
        workdir / KEYS_DIR / f"{new_name}.pub",
    ]
    try:
        with _all_or_nothing(workdir):
            public = Keys.create_key_pair(private_key_path=key_home / new_name, encrypted=False)
            if key_home != workdir / KEYS_DIR:
                shutil.copy2(public, workdir / KEYS_DIR / public.name)
            with _in(workdir):
                repo.replace_key(
                    old_key_name=old,
                    new_public_key_path=workdir / KEYS_DIR / public.name,
                    new_private_key_encrypted=False,
                )
            _publish(repo, workdir, [*root_key_dirs, key_home])
    except BaseException:
        for path in created:
            path.unlink(missing_ok=True)
        raise
    return new_name


def show(workdir: Path) -> dict[str, Any]:
    workdir = Path(workdir).resolve()
    targets = json.loads((workdir / REPO_DIR / "metadata" / "targets.json").read_text())
    return {
        "expires": {role: when.isoformat() for role, when in expires(workdir).items()},
        "targets": {
            name: info["length"] for name, info in sorted(targets["signed"]["targets"].items())
        },
    }


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tuf_repo.py", description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", type=Path, default=Path("update-repo"))
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("init", help="create keys and the first signed metadata")
    p.add_argument("--root-key-dir", type=Path, help="move the root private key(s) here")
    p.add_argument("--root-keys", type=int, default=1)
    p.add_argument("--root-threshold", type=int, default=1)
    p.add_argument("--encrypt-root", action="store_true", help="password-protect root keys")
    p = sub.add_parser("add", help="add release archives and sign")
    p.add_argument("archives", type=Path, nargs="+")
    p.add_argument("--version")
    p.add_argument("--target")
    p.add_argument("--no-patch", action="store_true")
    p.add_argument("--required", action="store_true", help="workers install this one first")
    p.add_argument("--key-dir", type=Path, action="append", default=[])
    p = sub.add_parser("refresh", help="re-sign what is close to expiring")
    p.add_argument("--key-dir", type=Path, action="append", default=[])
    p.add_argument("--force", action="append", default=[], choices=ONLINE_ROLES)
    p = sub.add_parser("resign-root", help="new root version, fresh expiry (offline key)")
    p.add_argument("--root-key-dir", type=Path, action="append", required=True)
    p = sub.add_parser("rotate-key", help="replace the key of one role")
    p.add_argument("role", choices=ROLES)
    p.add_argument("--root-key-dir", type=Path, action="append", required=True)
    p.add_argument("--new-key-dir", type=Path)
    sub.add_parser("show", help="targets and expiry dates")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(message)s")
    logging.getLogger("tufup").setLevel(logging.WARNING)
    workdir: Path = args.workdir
    try:
        if args.command == "init":
            repo_dir = init_repository(
                workdir,
                root_key_dir=args.root_key_dir,
                root_keys=args.root_keys,
                root_threshold=args.root_threshold,
                encrypt_root=args.encrypt_root,
            )
            print(f"initialised {repo_dir}")
        elif args.command == "add":
            if len(args.archives) > 1 and (args.version or args.target):
                raise RepoError("--version/--target name one archive; add them one by one")
            for added in add_releases(
                workdir,
                args.archives,
                args.key_dir,
                version=args.version,
                target=args.target,
                patch=not args.no_patch,
                required=args.required,
            ):
                patch = (
                    f", patch {added.patch.name} ({added.patch_size} bytes)" if added.patch else ""
                )
                print(f"added {added.archive.name} ({added.archive_size} bytes){patch}")
        elif args.command == "refresh":
            renewed = refresh(workdir, args.key_dir, force=args.force)
            print(f"re-signed: {', '.join(renewed) or 'nothing (all fresh)'}")
        elif args.command == "resign-root":
            resign_root(workdir, args.root_key_dir)
            print("root re-signed")
        elif args.command == "rotate-key":
            name = rotate_key(workdir, args.role, args.root_key_dir, new_key_dir=args.new_key_dir)
            print(f"{args.role} now signs with key {name}")
        else:
            print(json.dumps(show(workdir), indent=2))
    except RepoError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
