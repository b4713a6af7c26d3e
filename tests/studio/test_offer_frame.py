"""The offer frame the hub writes straight from a stored job equals the model-encoded one."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from studio_worker.protocol.frames import Offer, decode_studio_frame, encode
from studio_worker.studio.core import validate_job
from studio_worker.studio.hub import offer_text
from studio_worker.studio.jobbook import JobBook
from studio_worker.studio.store import Store

SOURCE = {
    "engine": "sd-cpp",
    "files": [
        {
            "role": "model",
            "url": "https://files.example/m.gguf",
            "sha256": "0" * 64,
            "size": 12,
            "filename": "m.gguf",
        }
    ],
    "cliDefaults": {"cfgScale": 7, "steps": 20, "width": 512, "height": 512},
}


@pytest.mark.parametrize(
    ("kind", "task", "source", "vram"),
    [
        ("llm", {"messages": [{"role": "user", "content": "Name three dragons ✨"}]}, None, 0),
        ("llm", {"messages": [], "system": "s", "maxTokens": 9, "stop": ["x"]}, None, 1.5),
        ("image", {"prompt": "a lantern", "width": 64, "height": 64, "ext": "png"}, SOURCE, 4),
        ("audio_stt", {"inputUrl": "https://assets.example/a.wav"}, None, 0.25),
        ("audio_tts", {"text": "hello", "speed": None}, None, 0),
        ("video", {"prompt": "waves", "seconds": 1.0, "fps": 4}, None, 6),
    ],
)
def test_offer_text_matches_the_model_encoding(
    tmp_path: Path, kind: str, task: dict[str, Any], source: dict[str, Any] | None, vram: float
) -> None:
    store = Store(tmp_path / "db")
    jobs = JobBook(store)
    task_wire, source_wire = validate_job(kind, task, "m", source)
    job_id = jobs.submit(
        kind=kind,
        model="m",
        task=task_wire,
        model_source=source_wire,
        vram_gb_estimate=float(vram),
        game_id="g",
        asset_name="a/b",
    )
    job = jobs.offer(job_id, "w_1")
    text = offer_text(job)
    assert json.loads(text) == json.loads(encode(Offer(claim=job.claim())))
    assert text == encode(Offer(claim=job.claim()))
    assert isinstance(decode_studio_frame(text), Offer)
    store.close()
