"""installers/install.ps1 without Windows.

PowerShell cannot be installed on this machine's package registries, so the script is not
run here. What is checked instead: it parses (PowerShell's own parser when `pwsh` is on
PATH; the tree-sitter PowerShell grammar when that package is installed), it follows the
same contract as install.sh (asset names, mirror layout, environment variables), and it
avoids what breaks `irm … | iex` or Windows PowerShell 5.1 (a bare `exit`, script-scope
variables leaking into the caller's session, PowerShell 7-only operators).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from studio_worker.platform import services

INSTALLERS = Path(__file__).resolve().parents[2] / "installers"
PS1 = INSTALLERS / "install.ps1"
SH = INSTALLERS / "install.sh"


def code_lines(text: str) -> list[str]:
    """Lines outside the comment-based help block and `#` comments (strings kept)."""
    body = re.sub(r"<#.*?#>", "", text, flags=re.S)
    return [line for line in body.splitlines() if not line.lstrip().startswith("#")]


def test_same_environment_variables_as_install_sh() -> None:
    ps1, sh = PS1.read_text(), SH.read_text()
    names = set(re.findall(r"\bSTUDIO_WORKER_[A-Z_]+\b", sh))
    assert names >= {
        "STUDIO_WORKER_VERSION",
        "STUDIO_WORKER_VARIANT",
        "STUDIO_WORKER_SERVICE",
        "STUDIO_WORKER_DOWNLOAD_BASE",
        "STUDIO_WORKER_INSTALL_DIR",
        "STUDIO_WORKER_OS",
        "STUDIO_WORKER_ARCH",
        "STUDIO_WORKER_UPDATE",
    }
    names -= {"STUDIO_WORKER_BIN_DIR"}  # Windows: the PATH entry is the junction
    for name in sorted(names):
        assert f"'{name}'" in ps1 or f"$env:{name}" in ps1, f"install.ps1 does not read {name}"
    assert "GITHUB_TOKEN" in ps1


def test_same_release_layout_as_install_sh() -> None:
    ps1, sh = PS1.read_text(), SH.read_text()
    for text in (ps1, sh):
        assert 'REPO="minis-gg/studio-worker"' in text or "$Repo = 'minis-gg/studio-worker'" in text
        assert "/releases/download" in text
        assert "api.github.com/repos/$" in text and "/releases/latest" in text
    # <base>/v<version>/<asset>, <asset>.sha256, <base>/latest
    assert "url=$DOWNLOAD_BASE/v$VERSION/$asset" in sh
    assert '$url = "$DownloadBase/v$v/$asset"' in ps1
    assert '"$url.sha256"' in sh and '"$url.sha256"' in ps1
    assert "source=$DOWNLOAD_BASE/latest" in sh
    assert '$source = "$DownloadBase/latest"' in ps1
    # studio-worker-<version>-<triple>[-cuda].tar.gz / .zip
    assert "asset_base=studio-worker-$VERSION-$TRIPLE" in sh
    assert "asset_base=$asset_base-cuda" in sh
    assert "asset=$asset_base.tar.gz" in sh
    assert '$assetBase = "studio-worker-$v-$triple"' in ps1
    assert '$assetBase = "$assetBase-cuda"' in ps1
    assert '$asset = "$assetBase.zip"' in ps1
    assert "'x86_64-pc-windows-msvc'" in ps1
    assert "'studio-worker.exe'" in ps1
    # the same checksum rules and messages
    for text in (ps1, sh):
        assert "checksum mismatch for " in text
        assert "nothing was installed" in text
        assert "is not '<sha256>  <file name>'" in text
        assert "download failed: " in text
        assert "unsupported CPU architecture: " in text
        assert "the variant must be auto, cpu or cuda" in text


def test_service_names_match_the_worker() -> None:
    ps1 = PS1.read_text()
    assert f"$TaskName = '{services.TASK_NAME}'" in ps1
    assert "install-service" in ps1 and "uninstall-service" in ps1
    sh = SH.read_text()
    assert f"systemd/user/{services.SYSTEMD_UNIT_NAME}" in sh
    assert f"LaunchAgents/{services.LAUNCHD_LABEL}.plist" in sh


def test_safe_under_iex_and_windows_powershell() -> None:
    lines = code_lines(PS1.read_text())
    unquoted = [re.sub(r"'(?:[^']|'')*'", "''", line) for line in lines]
    exits = [line.strip() for line in unquoted if re.search(r"\bexit\b", line)]
    # the only exit: when run as a file; under `irm | iex` an exit closes the window
    assert exits == ["if ($failed -and $PSCommandPath) { exit 1 }"]
    joined = "\n".join(lines)
    assert "$script:" not in joined and "$global:" not in joined
    for operator in (" && ", " || ", "??", "?.", "?["):
        assert operator not in joined, f"{operator.strip()} needs PowerShell 7"
    assert "Set-StrictMode" in joined
    # everything runs in a child scope, so preferences and functions do not leak
    assert re.search(r"^\& \{$", joined, flags=re.M)


@pytest.mark.skipif(shutil.which("pwsh") is None, reason="pwsh (PowerShell 7) not installed")
def test_powershell_parser_accepts_it() -> None:
    script = (
        "$errors = $null; $tokens = $null; "
        f"[void][System.Management.Automation.Language.Parser]::ParseFile('{PS1}', "
        "[ref]$tokens, [ref]$errors); "
        "if ($errors.Count) { $errors | ForEach-Object { $_.ToString() }; exit 1 }"
    )
    done = subprocess.run(
        ["pwsh", "-NoProfile", "-NonInteractive", "-Command", script],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.skipif(shutil.which("pwsh") is None, reason="pwsh (PowerShell 7) not installed")
def test_refuses_a_non_windows_system(tmp_path: Path) -> None:
    done = subprocess.run(
        ["pwsh", "-NoProfile", "-NonInteractive", "-File", str(PS1)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"HOME": str(tmp_path), "PATH": "/usr/bin:/bin", "STUDIO_WORKER_OS": "Linux"},
        check=False,
    )
    assert done.returncode == 1
    assert "this is not Windows (Linux): use install.sh" in done.stdout + done.stderr


def _tree_sitter_errors(source: bytes) -> list[str]:
    tree_sitter = pytest.importorskip("tree_sitter", reason="tree-sitter not installed")
    grammar = pytest.importorskip(
        "tree_sitter_powershell", reason="tree-sitter-powershell not installed"
    )
    parser = tree_sitter.Parser(tree_sitter.Language(grammar.language()))
    tree = parser.parse(source)
    found: list[str] = []

    def walk(node: Any) -> None:
        if node.type == "ERROR" or node.is_missing:
            found.append(f"line {node.start_point[0] + 1}: {node.type}")
        for child in node.children:
            walk(child)

    walk(tree.root_node)
    return found


def test_tree_sitter_grammar_parses_it() -> None:
    assert _tree_sitter_errors(PS1.read_bytes()) == []


def test_tree_sitter_grammar_notices_a_broken_script() -> None:
    broken = PS1.read_bytes().replace(b"function Install-StudioWorker {", b"function Install {(", 1)
    assert _tree_sitter_errors(broken) != []


def test_windows_layout_matches_the_updater() -> None:
    """current.txt names the version (the updater's pointer file on Windows), and the
    PATH shim and the service both go through it, so a self-update switches them too."""
    from studio_worker.platform import updater

    ps1 = PS1.read_text()
    assert f"Join-Path $Root '{updater.CURRENT_FILE}'" in ps1
    assert services.CURRENT_POINTER_FILE == updater.CURRENT_FILE
    assert services.CURRENT_LINK == updater.CURRENT_LINK
    assert 'set "STUDIO_WORKER_RUNS=%%v"' in ps1  # the shim reads current.txt
    assert "Invoke-ServiceStep $destExe" in ps1  # a versioned exe: the task follows current.txt
    assert "Join-Path $LocalAppData 'studio-worker'" in ps1  # updater.default_install_root()
