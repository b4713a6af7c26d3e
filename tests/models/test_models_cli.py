"""`studio-worker models list|pull|rm` against the loopback file server."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from studio_worker.cli import cli
from studio_worker.config.settings import Settings
from studio_worker.config.store import ConfigStore
from studio_worker.models_cli import human_bytes

from .conftest import FileServer, blob, sha

DATA = blob(200_000)
VAE = blob(20_000, seed=9)


@pytest.fixture
def cfg(tmp_path: Path) -> Path:
    path = tmp_path / "cfg" / "config.toml"
    path.parent.mkdir()
    ConfigStore(path).save(Settings(models_root=tmp_path / "models"))
    return path


async def invoke(cfg: Path, *args: str) -> Result:
    """Run the CLI in a thread: it runs its own event loop, the server lives in ours."""
    return await asyncio.to_thread(CliRunner().invoke, cli, ["--config", str(cfg), "models", *args])


async def test_pull_list_rm_round_trip(server: FileServer, cfg: Path, tmp_path: Path) -> None:
    server.files = {"model.gguf": DATA}
    url = server.file_url("model.gguf")

    pulled = await invoke(
        cfg, "pull", "org/img", "--engine", "sd-cpp", "--url", url, "--sha256", sha(DATA)
    )
    assert pulled.exit_code == 0, pulled.output
    dest = tmp_path / "models" / "sd-cpp" / "org_img" / "model.gguf"
    assert dest.read_bytes() == DATA
    assert f"model.gguf  200.0 kB  {dest}" in pulled.output
    assert "org/img: 1 file(s) ready for engine sd-cpp" in pulled.output

    listed = await invoke(cfg, "list")
    assert listed.exit_code == 0, listed.output
    assert listed.output.splitlines() == [
        f"models_root: {tmp_path / 'models'}",
        "sd-cpp  org_img  (200.0 kB)",
        "  model.gguf  200.0 kB",
    ]

    as_json = await invoke(cfg, "list", "--json")
    assert json.loads(as_json.output) == {
        "modelsRoot": str(tmp_path / "models"),
        "models": [
            {
                "engine": "sd-cpp",
                "model": "org_img",
                "path": str(dest.parent),
                "size": len(DATA),
                "files": [{"name": "model.gguf", "size": len(DATA)}],
                "partials": [],
            }
        ],
    }

    removed = await invoke(cfg, "rm", "org/img", "--engine", "sd-cpp")
    assert removed.exit_code == 0, removed.output
    assert removed.output == "removed sd-cpp/org/img (200.0 kB freed)\n"
    assert not dest.exists()
    assert (await invoke(cfg, "list")).output.endswith("no models cached\n")


async def test_pull_several_urls_with_names(server: FileServer, cfg: Path, tmp_path: Path) -> None:
    server.files = {"model.gguf": DATA, "vae.safetensors": VAE}
    result = await invoke(
        cfg, "pull", "m", "--engine", "sd-cpp",
        "--url", server.file_url("model.gguf"), "--url", server.file_url("vae.safetensors"),
        "--filename", "diffusion.gguf", "--filename", "vae.bin",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    folder = tmp_path / "models" / "sd-cpp" / "m"
    assert (folder / "diffusion.gguf").read_bytes() == DATA
    assert (folder / "vae.bin").read_bytes() == VAE


async def test_pull_from_a_source_file(server: FileServer, cfg: Path, tmp_path: Path) -> None:
    server.files = {"model.gguf": DATA}
    source = tmp_path / "source.json"
    source.write_text(
        json.dumps(
            {
                "engine": "llama-cpp",
                "files": [
                    {
                        "role": "model",
                        "url": server.file_url("model.gguf"),
                        "filename": "chat.gguf",
                        "approxBytes": len(DATA),
                        "sha256": sha(DATA),
                    }
                ],
                "cliDefaults": {"contextSize": 4096},
            }
        )
    )
    result = await invoke(cfg, "pull", "chat", "--source", str(source))
    assert result.exit_code == 0, result.output
    assert (tmp_path / "models" / "llama-cpp" / "chat" / "chat.gguf").read_bytes() == DATA


async def test_pull_failures_are_one_clear_line(server: FileServer, cfg: Path) -> None:
    server.files = {"model.gguf": DATA}
    url = server.file_url("model.gguf")

    bad_sha = await invoke(
        cfg, "pull", "m", "--engine", "sd-cpp", "--url", url, "--sha256", "ab" * 32
    )
    assert bad_sha.exit_code == 1
    assert bad_sha.output.splitlines()[-1] == (
        f"Error: sha256 mismatch: downloaded body hashes to {sha(DATA)} but the registry "
        f"expects {'ab' * 32} (corrupted or tampered download)"
    )

    plain_http = await invoke(
        cfg, "pull", "m", "--engine", "sd-cpp", "--url", "http://example.com/x.gguf"
    )
    assert plain_http.exit_code == 1
    assert "Error: model file URL must use https" in plain_http.output

    unsafe = await invoke(
        cfg, "pull", "m", "--engine", "sd-cpp", "--url", url, "--filename", "../x"
    )
    assert unsafe.exit_code == 1
    assert 'Error: model filename must be a plain file name: "../x"' in unsafe.output
    assert unsafe.exception is None or isinstance(unsafe.exception, SystemExit)


async def test_pull_usage_errors(cfg: Path, tmp_path: Path) -> None:
    no_engine = await invoke(cfg, "pull", "m", "--url", "https://example.com/a.gguf")
    assert no_engine.exit_code == 2 and "--engine is required" in no_engine.output

    nothing = await invoke(cfg, "pull", "m", "--engine", "sd-cpp")
    assert nothing.exit_code == 2 and "give --url" in nothing.output

    mismatched = await invoke(
        cfg, "pull", "m", "--engine", "sd-cpp", "--url", "https://example.com/a.gguf",
        "--sha256", "aa", "--sha256", "bb",
    )  # fmt: skip
    assert mismatched.exit_code == 2 and "--sha256 was given 2 times for 1 --url" in (
        mismatched.output
    )

    no_name = await invoke(
        cfg, "pull", "m", "--engine", "sd-cpp", "--url", "https://example.com/dir/"
    )
    assert no_name.exit_code == 1 and "pass --filename" in no_name.output

    broken = tmp_path / "broken.json"
    broken.write_text('{"engine": "sd-cpp", "files": [{"url": "https://x/y"}]}')
    bad_source = await invoke(cfg, "pull", "m", "--source", str(broken))
    assert bad_source.exit_code == 1
    assert f"Error: {broken} is not a ModelSource: files.0.role: Field required" in (
        bad_source.output
    )

    missing = await invoke(cfg, "pull", "m", "--source", str(tmp_path / "nope.json"))
    assert missing.exit_code == 1 and "reading" in missing.output

    both = await invoke(cfg, "pull", "m", "--source", str(broken), "--engine", "sd-cpp")
    assert both.exit_code == 2


async def test_list_shows_partial_downloads(cfg: Path, tmp_path: Path) -> None:
    folder = tmp_path / "models" / "sd-cpp" / "m"
    folder.mkdir(parents=True)
    (folder / "model.gguf.part").write_bytes(b"x" * 1500)
    listed = await invoke(cfg, "list")
    assert "  model.gguf  partial download: 1.5 kB so far" in listed.output.splitlines()
    as_json = json.loads((await invoke(cfg, "list", "--json")).output)
    assert as_json["models"][0]["partials"] == [{"name": "model.gguf", "size": 1500}]


async def test_rm_of_an_absent_model_is_a_clear_error(cfg: Path) -> None:
    result = await invoke(cfg, "rm", "ghost", "--engine", "sd-cpp")
    assert result.exit_code == 1
    assert 'Error: model "ghost" for engine "sd-cpp" is not cached' in result.output

    no_engine = await invoke(cfg, "rm", "ghost")
    assert no_engine.exit_code == 2


def test_the_models_group_is_on_the_top_level_help() -> None:
    result = CliRunner().invoke(cli, ["--help"])
    assert "models" in result.output
    for sub in ("list", "pull", "rm"):
        assert CliRunner().invoke(cli, ["models", sub, "--help"]).exit_code == 0


def test_human_bytes() -> None:
    assert human_bytes(0) == "0 B"
    assert human_bytes(999) == "999 B"
    assert human_bytes(1500) == "1.5 kB"
    assert human_bytes(3_864_250_304) == "3.9 GB"
