"""What `studio-worker --version` costs at start: the version literal and the lazy CLI."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import studio_worker

ROOT = Path(__file__).resolve().parents[1]


def test_the_version_literal_matches_pyproject() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert studio_worker.__version__ == project["version"]


def test_release_please_bumps_the_version_literal() -> None:
    import json

    config = json.loads((ROOT / "release-please-config.json").read_text())
    paths = {entry["path"] for entry in config["packages"]["."]["extra-files"]}
    assert "src/studio_worker/__init__.py" in paths
    init = (ROOT / "src/studio_worker/__init__.py").read_text()
    assert "x-release-please-version" in init


def _run_cli(args: list[str]) -> str:
    """Runs the CLI in a fresh interpreter; prints what it printed and the heavy modules."""
    probe = (
        "import sys\n"
        "from studio_worker.cli import cli\n"
        "try:\n"
        f"    cli.main(args={args!r}, prog_name='studio-worker')\n"
        "except SystemExit:\n"
        "    pass\n"
        "heavy = sorted(m for m in ('pydantic', 'httpx', 'aiohttp', 'websockets')"
        " if m in sys.modules)\n"
        "print('HEAVY', heavy)\n"
    )
    return subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout


def test_version_loads_neither_pydantic_nor_the_network_stack() -> None:
    out = _run_cli(["--version"])
    assert out.startswith(f"studio-worker {studio_worker.__version__} (cpu)\n")
    assert "HEAVY []" in out, out


def test_help_still_lists_the_lazily_loaded_commands() -> None:
    out = _run_cli(["--help"])
    for name in ("install-service", "uninstall-service", "models", "studio", "run"):
        assert f"  {name} " in out, out
