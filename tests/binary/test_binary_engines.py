"""Real engines inside the built binary: a llama.cpp job served by the executable.

Runs only when the archive was built with the llm engine (`build/build.py --engines llm`
or `all`: the release builds); the core build of the test command has no engine and the
test says so. The model is a real tiny llama GGUF written by the test, served from the
self-hosted studio's shelf, downloaded and checked by the binary's model store, and run
by llama.cpp in the binary's engine process.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from processes import StudioProcess, WorkerProcess, wait_for

from studio_worker import __version__

TESTS = Path(__file__).resolve().parents[1]


@pytest.fixture
def llm_build(unpacked: Path) -> Path:
    if not (unpacked / "llama_cpp").is_dir():
        pytest.skip("this build has no llm engine (the core build: --engines none)")
    return unpacked


def test_the_binary_runs_a_real_llama_job(llm_build: Path, binary: Path, tmp_path: Path) -> None:
    import sys

    sys.path.insert(0, str(TESTS))
    from fixtures.tiny_models import write_tiny_gguf

    pytest.importorskip("gguf", reason="gguf writes the test model")
    studio = StudioProcess(tmp_path / "studio")
    shelf = tmp_path / "studio" / "files"
    shelf.mkdir(parents=True, exist_ok=True)
    write_tiny_gguf(tmp_path / "tiny.gguf")
    shutil.copy(tmp_path / "tiny.gguf", shelf / "tiny.gguf")
    config = tmp_path / "worker" / "config.toml"
    config.parent.mkdir(parents=True)
    config.write_text(
        f'api_base_url = "{studio.url}"\nvram_threshold_gb = 8.0\n'
        f'models_root = "{tmp_path / "models"}"\n'
    )
    worker = WorkerProcess(config, tmp_path / "worker.log", command=[str(binary)])
    try:
        pending = wait_for(lambda: studio.get("/admin/requests?status=pending"), what="a request")
        studio.post(f"/admin/requests/{pending[0]['requestId']}/approve")
        files = studio.get("/admin/files")["files"]
        tiny = next(f for f in files if f["filename"] == "tiny.gguf")
        job_id = studio.post(
            "/admin/jobs",
            {
                "kind": "llm",
                "model": "tiny-llama",
                "task": {
                    "messages": [{"role": "user", "content": "hello"}],
                    "temperature": 0,
                    "maxTokens": 16,
                },
                "modelSource": {
                    "engine": "llama-cpp",
                    "files": [tiny],
                    "cliDefaults": {"contextSize": 256},
                },
            },
        )["jobId"]
        job = studio.wait_job(job_id, timeout=120)
        assert job["status"] == "done", (job, worker.log)
        reply = job["result"]["choices"][0]["message"]["content"]
        assert isinstance(reply, str)
        assert job["result"]["usage"]["completion_tokens"] > 0
        assert (tmp_path / "models" / "llama-cpp" / "tiny-llama" / "tiny.gguf").is_file()
        workers = studio.get("/admin/workers")
        assert workers[0]["capabilities"].get("agentVersion") == __version__
    finally:
        code = worker.stop()
        studio.stop()
    assert code == 0, worker.log
