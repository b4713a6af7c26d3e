""".github/workflows: they parse, reference files that exist, and lint clean.

`actionlint` (with shellcheck for the `run:` scripts, when that is installed too) runs
when it is on PATH or next to this Python; the YAML and reference checks run everywhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
WORKFLOWS = sorted((ROOT / ".github" / "workflows").glob("*.y*ml"))
TRIPLES = {
    "x86_64-unknown-linux-gnu",
    "aarch64-unknown-linux-gnu",
    "x86_64-apple-darwin",
    "aarch64-apple-darwin",
    "x86_64-pc-windows-msvc",
}
CUDA_TRIPLES = {"x86_64-unknown-linux-gnu", "x86_64-pc-windows-msvc"}
PENDING: set[str] = set()  # scripts a workflow may name before they exist
"""Referenced by release.yml and written with the binary build (issue 5, part 1)."""


def load(path: Path) -> dict[str, Any]:
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict), path
    if True in data:  # YAML 1.1 reads the key `on` as a boolean
        data["on"] = data.pop(True)
    return data


def tool(name: str) -> str | None:
    beside = Path(sys.executable).parent / name
    return str(beside) if beside.exists() else shutil.which(name)


def test_there_are_workflows() -> None:
    names = {p.name for p in WORKFLOWS}
    assert {"ci.yml", "release.yml", "pr-title.yml", "release-please.yml"} <= names


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_workflow_structure(path: Path) -> None:
    data = load(path)
    assert data.get("name")
    assert data.get("on"), "no trigger"
    jobs = data.get("jobs")
    assert isinstance(jobs, dict) and jobs
    for job_id, job in jobs.items():
        assert "runs-on" in job or "uses" in job, job_id
        for need in [job["needs"]] if isinstance(job.get("needs"), str) else job.get("needs", []):
            assert need in jobs, f"{job_id} needs unknown job {need}"
        for step in job.get("steps", []):
            assert ("uses" in step) != ("run" in step), f"{job_id}: a step needs uses or run"


def referenced_paths(text: str) -> set[str]:
    """Repository files named in run scripts and local actions."""
    found = set(re.findall(r"(?<![\w./-])((?:\.ci|scripts|installers|build|bench)/[\w./-]+)", text))
    found |= {m.removeprefix("./") for m in re.findall(r"uses:\s*(\./[\w./-]+)", text)}
    return {p.rstrip(".") for p in found if not p.startswith("build/out")}


@pytest.mark.parametrize("path", WORKFLOWS, ids=lambda p: p.name)
def test_referenced_files_exist(path: Path) -> None:
    data = load(path)
    scripts = [
        step.get("run", "") + "\n" + str(step.get("uses", ""))
        for job in data["jobs"].values()
        for step in job.get("steps", [])
    ]
    missing = {
        ref for ref in referenced_paths("\n".join(scripts)) if not (ROOT / ref).exists()
    } - PENDING
    assert not missing, f"{path.name} names files that do not exist: {sorted(missing)}"


def test_release_build_entry_point() -> None:
    refs = referenced_paths((ROOT / ".github/workflows/release.yml").read_text())
    assert "build/build.py" in refs
    if not (ROOT / "build/build.py").exists():
        pytest.skip("build/build.py is not written yet (the binary build)")


def test_ci_runs_the_projects_own_script() -> None:
    steps = load(ROOT / ".github/workflows/ci.yml")["jobs"]["test"]["steps"]
    assert any(step.get("run") == "bash .ci/run" for step in steps)


def test_release_matrix_covers_every_target() -> None:
    data = load(ROOT / ".github/workflows/release.yml")
    assert data["on"]["push"]["tags"] == ["v*"]
    assert {"workflow_dispatch", "workflow_call"} <= set(data["on"])
    build = data["jobs"]["build"]
    rows = build["strategy"]["matrix"]["include"]
    built = {(row["triple"], row["variant"]) for row in rows}
    expected = {(t, "cpu") for t in TRIPLES} | {(t, "cuda") for t in CUDA_TRIPLES}
    assert built == expected
    for row in rows:
        windows = "windows" in row["triple"]
        assert row["ext"] == ("zip" if windows else "tar.gz")
        assert row["exe"] == ("studio-worker.exe" if windows else "studio-worker")
    runs = "\n".join(step.get("run", "") for step in build["steps"])
    assert 'args=(--variant "$VARIANT")' in runs
    assert 'python build/build.py "${args[@]}"' in runs
    # nothing is preinstalled on a runner: the worker, its engines and Nuitka come first
    assert "pip install '.[all,update,desktop,telemetry,build]'" in runs
    assert runs.index("pip install '.[all") < runs.index("python build/build.py")
    asset = build["env"]["ASSET"]
    assert asset.startswith("studio-worker-${{ needs.meta.outputs.version }}-${{ matrix.triple }}")
    assert "'-cuda'" in asset


def test_release_uploads_the_installers_under_their_release_names() -> None:
    data = load(ROOT / ".github/workflows/release.yml")
    publish = data["jobs"]["publish"]
    assert publish["permissions"] == {"contents": "write"}
    runs = "\n".join(step.get("run", "") for step in publish["steps"])
    assert "cp installers/install.sh dist/studio-worker-installer.sh" in runs
    assert "cp installers/install.ps1 dist/studio-worker-installer.ps1" in runs
    assert 'gh release upload "$TAG" dist/* --clobber' in runs
    # the installers and the docs point at these names
    docs = (ROOT / "docs/install.md").read_text()
    for name in ("studio-worker-installer.sh", "studio-worker-installer.ps1"):
        assert f"releases/latest/download/{name}" in docs


def test_tags_match_release_please() -> None:
    config = json.loads((ROOT / "release-please-config.json").read_text())
    package = config["packages"]["."]
    # tags are v<version> (no component prefix), which release.yml and the installers use
    assert package.get("include-component-in-tag") is False
    assert package.get("include-v-in-tag", config.get("include-v-in-tag", True)) is True


def test_pr_titles_are_conventional_commits() -> None:
    data = load(ROOT / ".github/workflows/pr-title.yml")
    assert "pull_request_target" in data["on"]
    (step,) = data["jobs"]["conventional-title"]["steps"]
    assert step["uses"].startswith("amannn/action-semantic-pull-request@")
    assert {"feat", "fix"} <= set(step["with"]["types"].split())
    assert data["permissions"] == {"pull-requests": "read"}  # reads titles, runs nothing


@pytest.mark.skipif(tool("actionlint") is None, reason="actionlint not installed")
def test_actionlint_is_clean() -> None:
    actionlint = tool("actionlint")
    assert actionlint is not None
    env = dict(os.environ)
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    done = subprocess.run(
        [actionlint, "-no-color", *map(str, WORKFLOWS)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
