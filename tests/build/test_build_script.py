"""build/build.py without Nuitka: triples, asset names, the Nuitka argv, the archive layout."""

from __future__ import annotations

import hashlib
import importlib.util
import os
import subprocess
import sys
import tarfile
import zipfile
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "build" / "build.py"


def load() -> ModuleType:
    spec = importlib.util.spec_from_file_location("studio_worker_build", SCRIPT)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look the module up
    spec.loader.exec_module(module)
    return module


build = load()
LINUX = "x86_64-unknown-linux-gnu"
WINDOWS = "x86_64-pc-windows-msvc"


@pytest.mark.parametrize(
    ("system", "machine", "triple"),
    [
        ("Linux", "x86_64", "x86_64-unknown-linux-gnu"),
        ("Linux", "aarch64", "aarch64-unknown-linux-gnu"),
        ("Linux", "arm64", "aarch64-unknown-linux-gnu"),
        ("Darwin", "x86_64", "x86_64-apple-darwin"),
        ("Darwin", "arm64", "aarch64-apple-darwin"),
        ("Windows", "AMD64", "x86_64-pc-windows-msvc"),
        ("Windows", "x86_64", "x86_64-pc-windows-msvc"),
    ],
)
def test_target_triple(system: str, machine: str, triple: str) -> None:
    assert build.target_triple(system, machine) == triple


@pytest.mark.parametrize(
    ("system", "machine"),
    [("Linux", "armv7l"), ("Linux", "i686"), ("FreeBSD", "amd64"), ("Windows", "ARM64"), ("", "")],
)
def test_unsupported_platforms_are_a_clear_error(system: str, machine: str) -> None:
    with pytest.raises(build.BuildError, match=r"no studio-worker build for .*supported targets"):
        build.target_triple(system, machine)


def test_the_host_has_a_triple() -> None:
    assert build.target_triple() in build.TRIPLES.values()


def test_asset_names_match_the_installers_and_release_workflow() -> None:
    assert (
        build.asset_name("0.5.0", LINUX, "cpu")
        == "studio-worker-0.5.0-x86_64-unknown-linux-gnu.tar.gz"
    )
    assert (
        build.asset_name("0.5.0", LINUX, "cuda")
        == "studio-worker-0.5.0-x86_64-unknown-linux-gnu-cuda.tar.gz"
    )
    assert build.asset_name("1.2.3", WINDOWS, "cuda") == (
        "studio-worker-1.2.3-x86_64-pc-windows-msvc-cuda.zip"
    )
    assert build.asset_name("1.0.0", "aarch64-apple-darwin", "metal") == (
        "studio-worker-1.0.0-aarch64-apple-darwin.tar.gz"
    )
    assert build.exe_name(WINDOWS) == "studio-worker.exe"
    assert build.exe_name(LINUX) == "studio-worker"


def test_variants_are_checked_against_the_triple() -> None:
    build.check_variant("cuda", LINUX)
    build.check_variant("cuda", WINDOWS)
    build.check_variant("metal", "aarch64-apple-darwin")
    with pytest.raises(build.BuildError, match="no CUDA build"):
        build.check_variant("cuda", "aarch64-apple-darwin")
    with pytest.raises(build.BuildError, match="macOS only"):
        build.check_variant("metal", LINUX)
    with pytest.raises(build.BuildError, match="variant must be"):
        build.check_variant("rocm", LINUX)


def test_engine_sets() -> None:
    assert build.parse_engines("all") == list(build.ENGINES)
    assert build.parse_engines("none") == []
    assert build.parse_engines("stt, llm") == ["llm", "stt"]
    with pytest.raises(build.BuildError, match="unknown engine"):
        build.parse_engines("llm,video")


def command(
    variant: str = "cpu",
    engines: list[str] | None = None,
    triple: str = LINUX,
    desktop: bool = False,
) -> list[str]:
    return build.nuitka_command(
        entry=Path("/w/entry.py"),
        triple=triple,
        variant=variant,
        engines=[] if engines is None else engines,
        version="0.5.0",
        jobs=4,
        python="python",
        work_dir=Path("/w"),
        desktop=desktop,
    )


def values(argv: list[str], flag: str) -> list[str]:
    return [a.split("=", 1)[1] for a in argv if a.startswith(f"--{flag}=")]


def test_core_command() -> None:
    argv = command()
    assert argv[:4] == ["python", "-m", "nuitka", "--standalone"]
    assert "--onefile" not in argv
    assert argv[-1] == "/w/entry.py"
    assert values(argv, "output-dir") == ["/w"]
    assert values(argv, "output-filename") == ["studio-worker"]
    assert values(argv, "jobs") == ["4"]
    assert values(argv, "include-package") == ["studio_worker"]
    assert {"studio_worker", "certifi"} <= set(values(argv, "include-package-data"))
    skipped = set(values(argv, "nofollow-import-to"))
    # no engine, no hub, no dev tools in the core binary
    assert {"llama_cpp", "faster_whisper", "stable_diffusion_cpp", "piper", "numpy"} <= skipped
    assert {"huggingface_hub", "pytest", "_pytest", "mypy", "ruff", "*.tests.*"} <= skipped
    # a module named `tests` can be real code: jinja2 imports `jinja2.tests`
    assert "*.tests" not in skipped
    assert {"httpx._main", "pygments"} <= skipped
    # never followed from the engines: llama_cpp's openai wrapper, onnxruntime's tooling
    assert {"openai", "onnxruntime.transformers", "ctranslate2.converters"} <= skipped
    assert not set(values(argv, "include-package")) & skipped


def test_desktop_packages_are_compiled_when_installed() -> None:
    argv = command(desktop=True)
    assert {"pystray", "notifypy"} <= set(values(argv, "include-package"))
    assert "notifypy" in values(argv, "include-package-data")
    assert not {"pystray", "notifypy"} & set(values(command(), "include-package"))


def test_all_engines_command() -> None:
    argv = command(engines=build.parse_engines("all"))
    included = set(values(argv, "include-package"))
    assert {"studio_worker", "llama_cpp", "faster_whisper", "stable_diffusion_cpp", "piper"} <= (
        included
    )
    data = set(values(argv, "include-package-data"))
    assert {"faster_whisper", "piper", "certifi"} <= data
    # Nuitka copies these packages' libraries/executables as DLLs; data too is fatal
    assert not {"llama_cpp", "imageio_ffmpeg", "stable_diffusion_cpp"} & data
    assert values(argv, "user-package-configuration-file") == [str(build.PACKAGE_CONFIG)]
    skipped = set(values(argv, "nofollow-import-to"))
    assert "llama_cpp.server" in skipped
    assert not included & skipped
    assert "numpy" not in skipped
    # faster_whisper imports huggingface_hub at module level
    assert "huggingface_hub" not in skipped


def test_no_module_an_engine_imports_at_load_is_left_out() -> None:
    """llama_cpp/llama.py imports `llama_tokenizer` at module level: leaving it out broke
    `import llama_cpp` in the binary."""
    skipped = set(values(command(engines=["llm"]), "nofollow-import-to"))
    assert "llama_cpp.server" in skipped
    assert "llama_cpp.llama_tokenizer" not in skipped


def test_one_engine_command() -> None:
    argv = command(engines=["llm"])
    included = set(values(argv, "include-package"))
    skipped = set(values(argv, "nofollow-import-to"))
    assert {"llama_cpp", "jinja2"} <= included
    assert {"faster_whisper", "piper", "stable_diffusion_cpp", "huggingface_hub"} <= skipped
    assert "llama_cpp.server" in skipped


def test_windows_command_names_the_exe() -> None:
    argv = command(variant="cuda", triple=WINDOWS)
    assert values(argv, "output-filename") == ["studio-worker.exe"]
    assert values(argv, "product-version") == ["0.5.0"]


def test_cuda_cmake_args() -> None:
    cuda = build.cmake_args("cuda", ["llm", "stt", "image"])
    assert set(cuda) == {"llm", "image"}
    assert "-DGGML_CUDA=on" in cuda["llm"] and "-DGGML_NATIVE=OFF" in cuda["llm"]
    assert "-DSD_CUDA=ON" in cuda["image"]
    cpu = build.cmake_args("cpu", ["llm"])
    assert "CUDA" not in cpu["llm"] and "-DGGML_NATIVE=OFF" in cpu["llm"]
    installs = build.engine_install_commands("cuda", ["llm", "stt"], python="python")
    (llm_env, llm_argv), (stt_env, _) = installs
    assert llm_env["CMAKE_ARGS"] == cuda["llm"]
    assert llm_argv[:4] == ["python", "-m", "pip", "install"]
    assert "--no-binary" in llm_argv and "llama-cpp-python" in llm_argv
    assert stt_env == {}


def test_dry_run_prints_the_command() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--variant", "cpu", "--engines", "none", "--dry-run"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    assert "-m nuitka --standalone" in result.stdout
    assert "--nofollow-import-to=llama_cpp" in result.stdout
    assert f"studio-worker-{build.project_version()}-{build.target_triple()}" in result.stdout


def test_archive_path_prints_only_the_archive() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--variant", "cpu", "--engines", "none", "--archive-path"],
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    expected = build.OUT_DIR / build.asset_name(
        build.project_version(), build.target_triple(), "cpu"
    )
    assert result.stdout == f"{expected}\n"


def test_bad_engine_is_exit_2() -> None:
    result = subprocess.run(
        [sys.executable, str(SCRIPT), "--engines", "video", "--dry-run"],
        capture_output=True,
        text=True,
        check=False,
        timeout=60,
    )
    assert result.returncode == 2
    assert "error: unknown engine" in result.stderr


def fake_dist(tmp_path: Path, exe: str = "studio-worker") -> Path:
    dist = tmp_path / "studio_worker_main.dist"
    (dist / "certifi").mkdir(parents=True)
    (dist / exe).write_bytes(b"#!/bin/sh\necho fake\n")
    (dist / exe).chmod(0o755)
    (dist / "libpython3.11.so.1.0").write_bytes(b"\0" * 100)
    (dist / "certifi" / "cacert.pem").write_text("-----BEGIN CERTIFICATE-----\n")
    return dist


def check_sidecar(archive: Path) -> None:
    sidecar = archive.with_name(archive.name + ".sha256")
    text = sidecar.read_text()
    assert text.endswith("\n") and text.count("\n") == 1
    hex_digest, name = text.rstrip("\n").split("  ")
    assert name == archive.name
    assert hex_digest == hashlib.sha256(archive.read_bytes()).hexdigest()


def test_tar_archive_layout(tmp_path: Path) -> None:
    root = tmp_path / "root.json"
    root.write_text('{"signed": {}}')
    archive = build.make_archive(
        fake_dist(tmp_path),
        tmp_path / "out",
        version="0.5.0",
        triple=LINUX,
        variant="cuda",
        update_root=root,
    )
    assert archive == tmp_path / "out" / "studio-worker-0.5.0-x86_64-unknown-linux-gnu-cuda.tar.gz"
    top = "studio-worker-0.5.0-x86_64-unknown-linux-gnu-cuda"
    with tarfile.open(archive) as tf:
        names = set(tf.getnames())
        assert {n.split("/")[0] for n in names} == {top}
        assert {
            f"{top}/studio-worker",
            f"{top}/libpython3.11.so.1.0",
            f"{top}/certifi/cacert.pem",
            f"{top}/.variant",
            f"{top}/update-root.json",
        } <= names
        exe = tf.getmember(f"{top}/studio-worker")
        assert exe.mode & 0o111
        assert tf.extractfile(f"{top}/.variant").read() == b"cuda\n"  # type: ignore[union-attr]
        assert tf.extractfile(f"{top}/update-root.json").read() == root.read_bytes()  # type: ignore[union-attr]
    check_sidecar(archive)
    # what installers/install.sh does with it
    unpacked = tmp_path / "unpacked"
    unpacked.mkdir()
    subprocess.run(["tar", "-xzf", str(archive), "-C", str(unpacked)], check=True)
    assert (unpacked / top / "studio-worker").stat().st_mode & 0o111


def test_no_update_root_unless_given(tmp_path: Path) -> None:
    archive = build.make_archive(
        fake_dist(tmp_path), tmp_path / "out", version="0.5.0", triple=LINUX, variant="cpu"
    )
    with tarfile.open(archive) as tf:
        names = tf.getnames()
    assert not any(n.endswith("update-root.json") for n in names)
    assert sum(n.endswith("/.variant") for n in names) == 1


def test_variant_in_the_dist_is_not_packed_twice(tmp_path: Path) -> None:
    dist = fake_dist(tmp_path)
    (dist / ".variant").write_text("cpu\n")
    archive = build.make_archive(
        dist, tmp_path / "out", version="0.5.0", triple=LINUX, variant="cpu"
    )
    with tarfile.open(archive) as tf:
        assert sum(n.endswith("/.variant") for n in tf.getnames()) == 1


def test_zip_archive_on_windows(tmp_path: Path) -> None:
    archive = build.make_archive(
        fake_dist(tmp_path, "studio-worker.exe"),
        tmp_path / "out",
        version="0.5.0",
        triple=WINDOWS,
        variant="cpu",
    )
    assert archive.name == "studio-worker-0.5.0-x86_64-pc-windows-msvc.zip"
    top = "studio-worker-0.5.0-x86_64-pc-windows-msvc"
    with zipfile.ZipFile(archive) as zf:
        names = set(zf.namelist())
        assert {f"{top}/studio-worker.exe", f"{top}/certifi/cacert.pem", f"{top}/.variant"} <= names
        assert zf.read(f"{top}/.variant") == b"cpu\n"
    check_sidecar(archive)


def test_missing_executable_is_refused(tmp_path: Path) -> None:
    dist = tmp_path / "empty.dist"
    dist.mkdir()
    with pytest.raises(build.BuildError, match="has no studio-worker"):
        build.make_archive(dist, tmp_path / "out", version="0.5.0", triple=LINUX, variant="cpu")


def test_the_package_configuration_ships_the_sd_cpp_library() -> None:
    """sd.cpp's library is loaded with ctypes from `stable_diffusion_cpp/lib`; Nuitka's data
    scan skips shared libraries, so our package configuration must name it as a DLL, and the
    names must match what the installed wheel carries."""
    yaml = pytest.importorskip("yaml", reason="PyYAML reads the configuration")
    config = yaml.safe_load(build.PACKAGE_CONFIG.read_text())
    (sd,) = [entry for entry in config if entry["module-name"] == "stable_diffusion_cpp"]
    (rule,) = sd["dlls"]
    assert rule["from_filenames"]["relative_path"] == "lib"
    prefixes = tuple(rule["from_filenames"]["prefixes"])
    spec = importlib.util.find_spec("stable_diffusion_cpp")
    if spec is None or spec.origin is None:
        pytest.skip("stable-diffusion-cpp-python is not installed")
    lib = Path(spec.origin).parent / "lib"
    shipped = [p.name for p in lib.iterdir() if p.name.startswith(prefixes)]
    assert any("stable-diffusion" in name for name in shipped), sorted(os.listdir(lib))
