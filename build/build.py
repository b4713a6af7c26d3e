"""Build the standalone studio-worker binary for this machine's target triple.

    python build/build.py [--variant cpu|cuda|metal] [--engines all|none|llm,stt,...]
                          [--update-root PATH] [--install-engines] [--dry-run]

Nuitka compiles `studio_worker` in `--standalone` mode (a folder with the executable and
its libraries beside it; not `--onefile`, which unpacks itself on every start and trips
antivirus tools) into build/work/, and the folder is packed as

    build/out/studio-worker-<version>-<triple>[-cuda].tar.gz   (.zip on Windows)
    build/out/studio-worker-<version>-<triple>[-cuda].tar.gz.sha256   "<hex>  <file name>"

holding `studio-worker-<version>-<triple>[-cuda]/studio-worker[.exe]`, a `.variant` file
(cpu/cuda/metal, printed by `studio-worker --version`) and, with --update-root, the
self-updater's `update-root.json`. docs/build.md has the details and the figures.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tarfile
import time
import tomllib
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
OUT_DIR = ROOT / "build" / "out"
WORK_DIR = ROOT / "build" / "work"
APP = "studio-worker"
ENTRY_NAME = "studio_worker_main"
"""Stem of the generated entry script; Nuitka names the dist folder `<stem>.dist`."""
VARIANTS = ("cpu", "cuda", "metal")
VARIANT_FILE = ".variant"
"""Inside the archive's top folder; the installer writes the same file (installers/install.sh)."""
UPDATE_ROOT_NAME = "update-root.json"
"""studio_worker.platform.updater.ROOT_SEED: the updater looks for it next to the executable."""

TRIPLES = {
    ("linux", "x86_64"): "x86_64-unknown-linux-gnu",
    ("linux", "aarch64"): "aarch64-unknown-linux-gnu",
    ("darwin", "x86_64"): "x86_64-apple-darwin",
    ("darwin", "aarch64"): "aarch64-apple-darwin",
    ("windows", "x86_64"): "x86_64-pc-windows-msvc",
}
MACHINES = {
    "x86_64": "x86_64",
    "amd64": "x86_64",
    "x64": "x86_64",
    "aarch64": "aarch64",
    "arm64": "aarch64",
}
CUDA_TRIPLES = {"x86_64-unknown-linux-gnu", "x86_64-pc-windows-msvc"}
METAL_TRIPLES = {"aarch64-apple-darwin", "x86_64-apple-darwin"}


class BuildError(Exception):
    """A refusal with a message for the person running the build."""


@dataclass(frozen=True)
class Engine:
    """What one engine adds to the binary. Adding an engine is one entry in ENGINES."""

    packages: tuple[str, ...]
    """Followed and compiled (`--include-package`); the first one names the engine's import."""
    data: tuple[str, ...] = ()
    """Packages whose data files (models, espeak data, ffmpeg) ship (`--include-package-data`)."""
    skip: tuple[str, ...] = ()
    """Parts of those packages the binary never uses (`--nofollow-import-to`)."""
    cmake_args: dict[str, str] = field(default_factory=dict)
    """Variant -> CMAKE_ARGS for building the engine's wheel from source."""
    requirement: str = ""


ENGINES: dict[str, Engine] = {
    "llm": Engine(
        packages=("llama_cpp", "jinja2"),
        # no data: Nuitka's own llama_cpp configuration copies lib/*.so|dylib|dll as DLLs,
        # and shipping them as data too is a fatal conflict (measured here)
        # the OpenAI-style server (FastAPI, uvicorn); `llama_tokenizer` must stay: llama.py
        # imports it at module level (its HF tokenizer imports transformers only when used)
        skip=("llama_cpp.server",),
        cmake_args={
            "cpu": "-DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF",
            "cuda": "-DGGML_CUDA=on -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF",
            "metal": "-DGGML_METAL=on -DGGML_NATIVE=OFF -DLLAVA_BUILD=OFF",
        },
        requirement="llama-cpp-python>=0.3",
    ),
    "stt": Engine(
        packages=("faster_whisper", "ctranslate2", "tokenizers", "av"),
        data=("faster_whisper",),  # assets/silero_vad*.onnx
        requirement="faster-whisper>=1.1",
    ),
    "image": Engine(
        # no data: its lib/ (skipped by Nuitka's data scan) is copied as DLLs by
        # build/nuitka-package.config.yml; Nuitka's own imageio_ffmpeg configuration copies
        # binaries/ffmpeg-* as an executable (shipping it as data too is a fatal conflict)
        packages=("stable_diffusion_cpp", "imageio_ffmpeg"),
        cmake_args={
            "cpu": "-DGGML_NATIVE=OFF -DSD_BUILD_EXAMPLES=OFF",
            "cuda": "-DSD_CUDA=ON -DGGML_NATIVE=OFF -DSD_BUILD_EXAMPLES=OFF",
            "metal": "-DSD_METAL=ON -DGGML_NATIVE=OFF -DSD_BUILD_EXAMPLES=OFF",
        },
        requirement="stable-diffusion-cpp-python>=0.4",
    ),
    "tts": Engine(
        packages=("piper", "onnxruntime", "imageio_ffmpeg"),
        data=("piper",),  # espeak-ng-data; ffmpeg: see "image"
        requirement="piper-tts>=1.3",
    ),
}

ALWAYS_SKIP = (
    # test and development tools: never imported by the worker
    "pytest",
    "_pytest",
    "hypothesis",
    "mypy",
    "ruff",
    "setuptools",
    "pip",
    "distutils",
    "IPython",
    "tkinter",
    "matplotlib",
    "pandas",
    "scipy",
    "torch",
    # test suites shipped inside packages (their modules, not the bare package name:
    # `jinja2.tests` is jinja2's `is …` test functions, which jinja2 needs to import)
    "*.tests.*",
    "*.test.*",
    "*.testing",
    "numpy.f2py",
    "numpy.distutils",
    # httpx's command-line client (and through it pygments, ~320 C files): the worker only
    # uses the library; httpx falls back to a stub `main` when the import fails
    "httpx._main",
    "pygments",
    "rich",
    # llama_cpp's `create_chat_completion_openai_v1` imports openai's types inside the
    # function: 1 108 modules the worker never runs (its OpenAI-shaped API is its own)
    "openai",
    # onnxruntime's model tooling (transformers optimisers, quantisation, converters,
    # the unittest backend; protobuf comes with them): piper and the whisper VAD only make
    # an InferenceSession. ctranslate2's converters need torch/transformers (lazy there).
    "onnxruntime.transformers",
    "onnxruntime.tools",
    "onnxruntime.quantization",
    "onnxruntime.backend",
    "ctranslate2.converters",
    "ctranslate2.specs",
)
BYTECODE_PACKAGES = (
    # the worker's libraries
    "pydantic", "typing_inspection", "annotated_types", "typing_extensions",
    "aiohttp", "aiohappyeyeballs", "aiosignal", "attr", "frozenlist", "multidict",
    "propcache", "yarl", "idna", "httpx", "httpcore", "h11", "sniffio",
    "websockets", "click", "platformdirs", "tomli_w", "zstandard", "greenlet",
    "PIL", "loguru", "six", "google",
    # the updater (tufup and its TUF client, signatures)
    "tufup", "tuf", "securesystemslib", "cryptography", "nacl", "bsdiff4", "requests",
    "urllib3", "charset_normalizer",
    # the desktop layer
    "pystray", "notifypy", "Xlib", "jeepney",
    # the engines' Python sides (their native libraries are what does the work)
    "llama_cpp", "jinja2", "markupsafe", "numpy", "faster_whisper", "ctranslate2",
    "tokenizers", "huggingface_hub", "av", "tqdm", "stable_diffusion_cpp", "piper",
    "onnxruntime", "yaml", "filelock", "fsspec", "packaging",
)  # fmt: skip
"""Included as bytecode, not compiled to C (`--noinclude-custom-mode=<package>:bytecode`).

Compiled C costs build time and, at run time, resident memory: a compiled module's code
and constants are pages of the executable touched when it is imported (the core binary
idled at 103 MB, 42 MB of them the executable's own .text and .rodata, against 61 MB for
`python -m studio_worker`). Bytecode is what CPython runs anyway; the worker's own package
stays compiled. Not here, so compiled: packages whose Nuitka configuration patches their
source for a standalone build (patches do not apply to bytecode): `imageio_ffmpeg` (the
path of its ffmpeg), `certifi` (its CA bundle without importlib.resources) and
`sentry_sdk` (its integrations' metadata checks); and `anyio`, for which Nuitka adds
load-time code to `anyio.to_process` (a bytecode package with such a trigger fails the
build: "'UncompiledPythonModule' object has no attribute 'getCompilationMode'")."""
PACKAGE_CONFIG = Path(__file__).resolve().parent / "nuitka-package.config.yml"
"""Nuitka package configuration for engine libraries its standard one does not know."""
DESKTOP_PACKAGES = ("pystray", "notifypy")
"""The tray and notifications (`studio-worker ui`; the `desktop` extra). Both are imported
lazily, so they are named for the compile; notifypy ships its macOS/Windows notifiers as
data."""
HUB_SKIP = "huggingface_hub"
"""Models come from the studio, not model hubs; faster_whisper imports it at module level, so
it stays when the stt engine is in the binary."""
ALL_ENGINE_PACKAGES = tuple(
    sorted({p for e in ENGINES.values() for p in e.packages} | {"numpy", "onnxruntime"})
)


def target_triple(system: str | None = None, machine: str | None = None) -> str:
    """The Rust-style target triple for platform.system() / platform.machine()."""
    system = (system if system is not None else platform.system()).lower()
    machine = machine if machine is not None else platform.machine()
    arch = MACHINES.get(machine.lower())
    triple = TRIPLES.get((system, arch)) if arch else None
    if triple is None:
        supported = ", ".join(sorted(TRIPLES.values()))
        raise BuildError(
            f"no studio-worker build for {system or '?'}/{machine or '?'}: supported targets are"
            f" {supported}"
        )
    return triple


def is_windows(triple: str) -> bool:
    return "windows" in triple


def asset_base(version: str, triple: str, variant: str) -> str:
    """`studio-worker-<version>-<triple>[-cuda]`: the archive's name and its top folder."""
    suffix = "-cuda" if variant == "cuda" else ""
    return f"{APP}-{version}-{triple}{suffix}"


def asset_name(version: str, triple: str, variant: str) -> str:
    ext = "zip" if is_windows(triple) else "tar.gz"
    return f"{asset_base(version, triple, variant)}.{ext}"


def exe_name(triple: str) -> str:
    return f"{APP}.exe" if is_windows(triple) else APP


def check_variant(variant: str, triple: str) -> None:
    if variant not in VARIANTS:
        raise BuildError(f"the variant must be one of {', '.join(VARIANTS)}, not {variant!r}")
    if variant == "cuda" and triple not in CUDA_TRIPLES:
        raise BuildError(
            f"there is no CUDA build for {triple} (CUDA: {', '.join(sorted(CUDA_TRIPLES))})"
        )
    if variant == "metal" and triple not in METAL_TRIPLES:
        raise BuildError(f"Metal is macOS only, not {triple}")


def parse_engines(spec: str) -> list[str]:
    """`all`, `none` or a comma list of ENGINES names, in ENGINES order."""
    spec = spec.strip().lower()
    if spec == "all":
        return list(ENGINES)
    if spec in ("none", ""):
        return []
    names = {n.strip() for n in spec.split(",") if n.strip()}
    unknown = names - set(ENGINES)
    if unknown:
        raise BuildError(
            f"unknown engine(s) {', '.join(sorted(unknown))}: choose from all, none,"
            f" {', '.join(ENGINES)}"
        )
    return [n for n in ENGINES if n in names]


def project_version(pyproject: Path = ROOT / "pyproject.toml") -> str:
    with pyproject.open("rb") as f:
        return str(tomllib.load(f)["project"]["version"])


def cmake_args(variant: str, engines: list[str]) -> dict[str, str]:
    """Engine -> the CMAKE_ARGS its wheel is built with for this variant (source builds)."""
    return {n: ENGINES[n].cmake_args[variant] for n in engines if ENGINES[n].cmake_args}


def engine_install_commands(
    variant: str, engines: list[str], python: str = sys.executable
) -> list[tuple[dict[str, str], list[str]]]:
    """(extra environment, argv) per engine: pip builds the native wheels for the variant."""
    commands = []
    for name in engines:
        engine = ENGINES[name]
        env = {}
        argv = [python, "-m", "pip", "install", engine.requirement]
        if engine.cmake_args:
            env = {"CMAKE_ARGS": engine.cmake_args[variant], "FORCE_CMAKE": "1"}
            argv[4:4] = ["--no-binary", engine.requirement.split(">")[0].split("=")[0]]
            argv.insert(4, "--force-reinstall")
            argv.insert(5, "--no-deps")
        commands.append((env, argv))
    return commands


def nuitka_command(
    *,
    entry: Path,
    triple: str,
    variant: str,
    engines: list[str],
    version: str,
    jobs: int | None = None,
    python: str = sys.executable,
    work_dir: Path = WORK_DIR,
    desktop: bool = False,
) -> list[str]:
    """The Nuitka argv that compiles the worker (and the chosen engines, and the desktop
    packages when `desktop`) into work_dir."""
    jobs = jobs or os.cpu_count() or 1
    include = ["studio_worker"]
    data = ["studio_worker", "certifi"]  # py.typed and any data; certifi's cacert.pem
    if desktop:
        include += DESKTOP_PACKAGES
        data.append("notifypy")
    skip = list(ALWAYS_SKIP)
    chosen = [ENGINES[n] for n in engines]
    for engine in chosen:
        include += [p for p in engine.packages if p not in include]
        data += [p for p in engine.data if p not in data]
        skip += engine.skip
    wanted = {p for e in chosen for p in e.packages}
    skip += [p for p in ALL_ENGINE_PACKAGES if p not in wanted and not (p == "numpy" and chosen)]
    if "stt" not in engines:
        skip.append(HUB_SKIP)
    argv = [
        python,
        "-m",
        "nuitka",
        "--standalone",
        f"--output-dir={work_dir}",
        f"--output-filename={exe_name(triple)}",
        f"--jobs={jobs}",
        "--assume-yes-for-downloads",
        f"--report={work_dir / 'nuitka-report.xml'}",
    ]
    argv.append(f"--user-package-configuration-file={PACKAGE_CONFIG}")
    argv += [f"--include-package={p}" for p in include]
    argv += [f"--include-package-data={p}" for p in data]
    argv += [f"--nofollow-import-to={p}" for p in dict.fromkeys(skip)]
    argv += [f"--noinclude-custom-mode={p}:bytecode" for p in BYTECODE_PACKAGES]
    if is_windows(triple):
        argv += [
            f"--product-name={APP}",
            f"--product-version={version.split('+', 1)[0].split('-', 1)[0]}",
            f"--file-description=studio-worker ({variant})",
            "--company-name=studio-worker contributors",
        ]
    if triple.endswith("apple-darwin"):
        argv.append(f"--macos-target-arch={'arm64' if triple.startswith('aarch64') else 'x86_64'}")
    argv.append(str(entry))
    return argv


def write_entry(work_dir: Path = WORK_DIR) -> Path:
    work_dir.mkdir(parents=True, exist_ok=True)
    entry = work_dir / f"{ENTRY_NAME}.py"
    entry.write_text(
        '"""Entry point compiled by build/build.py."""\n'
        "from studio_worker.cli import main\n\n"
        'if __name__ == "__main__":\n'
        "    main()\n"
    )
    return entry


def dist_folder(work_dir: Path = WORK_DIR) -> Path:
    return work_dir / f"{ENTRY_NAME}.dist"


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def make_archive(
    dist: Path,
    out_dir: Path,
    *,
    version: str,
    triple: str,
    variant: str,
    update_root: Path | None = None,
) -> Path:
    """Pack a dist folder as the release asset and write its `.sha256`; returns the archive.

    The archive holds one folder, `asset_base(...)/`, with the dist folder's contents, the
    `.variant` file and (when given) `update-root.json`.
    """
    exe = dist / exe_name(triple)
    if not exe.is_file():
        raise BuildError(f"{dist} has no {exe.name}: the build did not produce the executable")
    top = asset_base(version, triple, variant)
    name = asset_name(version, triple, variant)
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / name
    extras = {VARIANT_FILE: f"{variant}\n".encode()}
    if update_root is not None:
        extras[UPDATE_ROOT_NAME] = update_root.read_bytes()
    files = sorted(
        p for p in dist.rglob("*") if (p.is_file() or p.is_symlink()) and p.name not in extras
    )
    tmp = archive.with_name(archive.name + ".part")
    if is_windows(triple):
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zf:
            for path in files:
                zf.write(path, f"{top}/{path.relative_to(dist).as_posix()}")
            for extra, content in extras.items():
                zf.writestr(f"{top}/{extra}", content)
    else:
        with tarfile.open(tmp, "w:gz", compresslevel=9) as tf:
            tf.add(dist, arcname=top, recursive=False)
            for path in sorted(
                p for p in dist.rglob("*") if p.relative_to(dist).as_posix() not in extras
            ):
                tf.add(path, arcname=f"{top}/{path.relative_to(dist).as_posix()}", recursive=False)
            for extra, content in extras.items():
                info = tarfile.TarInfo(f"{top}/{extra}")
                info.size = len(content)
                info.mode = 0o644
                info.mtime = int(time.time())
                tf.addfile(info, io.BytesIO(content))
    tmp.replace(archive)
    sidecar = archive.with_name(archive.name + ".sha256")
    sidecar.write_text(f"{sha256_of(archive)}  {archive.name}\n")
    return archive


def folder_size(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def nuitka_env() -> dict[str, str]:
    env = dict(os.environ)
    src = str(ROOT / "src")
    env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    ccache = shutil.which("ccache")
    if ccache and "NUITKA_CCACHE_BINARY" not in env:
        env["NUITKA_CCACHE_BINARY"] = ccache
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="cpu", choices=VARIANTS)
    parser.add_argument(
        "--engines",
        default="all",
        help=f"all (default), none (a fast core build) or a comma list of {', '.join(ENGINES)}",
    )
    parser.add_argument("--update-root", type=Path, help="root.json to ship as update-root.json")
    parser.add_argument(
        "--install-engines",
        action="store_true",
        help="pip-build the engines' wheels with the variant's CMAKE_ARGS first",
    )
    parser.add_argument("--jobs", type=int, default=None, help="C compile jobs (default: CPUs)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, build nothing")
    parser.add_argument(
        "--archive-path",
        action="store_true",
        help="print only the path of the archive this build writes, build nothing",
    )
    args = parser.parse_args(argv)
    try:
        triple = target_triple()
        check_variant(args.variant, triple)
        engines = parse_engines(args.engines)
        if args.update_root is not None and not args.update_root.is_file():
            raise BuildError(f"--update-root {args.update_root}: no such file")
        version = project_version()
        entry = WORK_DIR / f"{ENTRY_NAME}.py"
        desktop = all(importlib.util.find_spec(p) is not None for p in DESKTOP_PACKAGES)
        command = nuitka_command(
            entry=entry,
            triple=triple,
            variant=args.variant,
            engines=engines,
            version=version,
            jobs=args.jobs,
            desktop=desktop,
        )
        installs = engine_install_commands(args.variant, engines) if args.install_engines else []
        name = asset_name(version, triple, args.variant)
        if args.archive_path:
            print(OUT_DIR / name)
            return 0
        chosen = ", ".join(engines) or "none"
        print(f"studio-worker {version} for {triple} ({args.variant}), engines: {chosen}")
        if not desktop:
            print(
                "note: pystray/notify-py are not installed (the `desktop` extra): "
                "`studio-worker ui` will run without a tray and notifications",
                file=sys.stderr,
            )
        for engine, flags in cmake_args(args.variant, engines).items():
            print(f"  {engine} wheel CMAKE_ARGS: {flags}")
        for env, install in installs:
            print(
                "  "
                + " ".join(
                    [*(f"{k}={shlex.quote(v)}" for k, v in env.items()), shlex.join(install)]
                )
            )
        print(shlex.join(command))
        print(f"-> {OUT_DIR / name} (+ .sha256)")
        if args.dry_run:
            return 0
        for env, install in installs:
            subprocess.run(install, check=True, env={**os.environ, **env})
        write_entry()
        env = nuitka_env()
        if "NUITKA_CCACHE_BINARY" not in env and sys.platform != "win32":
            print("note: ccache not found; rebuilds will recompile every C file", file=sys.stderr)
        started = time.monotonic()
        result = subprocess.run(command, check=False, env=env, cwd=ROOT)
        if result.returncode != 0:
            raise BuildError(f"Nuitka failed (exit {result.returncode})")
        dist = dist_folder()
        (dist / VARIANT_FILE).write_text(f"{args.variant}\n")  # --version from the dist folder too
        archive = make_archive(
            dist,
            OUT_DIR,
            version=version,
            triple=triple,
            variant=args.variant,
            update_root=args.update_root,
        )
        elapsed = time.monotonic() - started
        print(
            f"built {archive} in {elapsed / 60:.1f} min: dist {folder_size(dist) / 1e6:.0f} MB,"
            f" archive {archive.stat().st_size / 1e6:.0f} MB"
        )
    except BuildError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
