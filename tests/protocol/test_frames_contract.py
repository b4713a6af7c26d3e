"""Golden JSON for every frame, both directions: decode, re-encode, byte-for-byte shape."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from studio_worker.protocol.frames import (
    FrameError,
    Offer,
    decode_studio_frame,
    decode_worker_frame,
    encode,
)

GOLDEN = Path(__file__).parent / "golden"


def _lines(name: str) -> list[str]:
    return [line for line in (GOLDEN / name).read_text().splitlines() if line.strip()]


@pytest.mark.parametrize("line", _lines("worker_frames.jsonl"))
def test_worker_frames_round_trip(line: str) -> None:
    frame = decode_worker_frame(line)
    assert json.loads(encode(frame)) == json.loads(line)


@pytest.mark.parametrize("line", _lines("studio_frames.jsonl"))
def test_studio_frames_round_trip(line: str) -> None:
    frame = decode_studio_frame(line)
    assert json.loads(encode(frame)) == json.loads(line)


def test_every_frame_type_has_a_golden_line() -> None:
    worker = {json.loads(line)["type"] for line in _lines("worker_frames.jsonl")}
    studio = {json.loads(line)["type"] for line in _lines("studio_frames.jsonl")}
    assert worker == {"hello", "heartbeat", "accept", "reject", "completeJson", "fail", "logBatch"}
    assert studio == {"welcome", "offer", "heartbeatAck", "completeAck", "failAck", "error"}


def test_absent_optionals_are_omitted_not_null() -> None:
    frame = decode_worker_frame(
        '{{"type":"heartbeat","capabilities":{}}}'.format(
            json.dumps(json.loads(_lines("worker_frames.jsonl")[2])["capabilities"])
        )
    )
    wire = encode(frame)
    assert "currentJobId" not in wire
    assert "userPresence" not in wire
    assert "null" not in wire


def test_nulls_are_accepted_on_receive_and_defaults_applied() -> None:
    text = json.dumps(
        {
            "type": "offer",
            "claim": {
                "jobId": "j",
                "gameId": "g",
                "assetName": "a",
                "model": "m",
                "vramGbEstimate": 1,
                "prompt": "legacy top-level prompt",
                "ext": "png",
                "futureField": {"x": 1},
                "task": {
                    "kind": "image",
                    "prompt": "p",
                    "negativePrompt": None,
                    "width": None,
                    "seed": None,
                },
                "modelSource": {"engine": "synthetic", "files": None, "cliDefaults": {}},
            },
        }
    )
    frame = decode_studio_frame(text)
    assert isinstance(frame, Offer)
    task = frame.claim.task
    assert task.kind == "image"
    assert (task.width, task.height, task.steps, task.ext) == (512, 512, 20, "webp")
    assert frame.claim.model_source.files == []
    defaults = frame.claim.model_source.cli_defaults
    assert (defaults.cfg_scale, defaults.steps, defaults.width, defaults.height) == (0, 0, 0, 0)


def test_older_capabilities_are_defaulted() -> None:
    old = {
        "machineName": "m",
        "username": "u",
        "agentVersion": "0.4.9",
        "engine": "multi",
        "vramTotalGb": 8,
        "vramThresholdGb": 8,
        "autoEnabled": True,
    }
    frame = decode_worker_frame(
        json.dumps({"type": "hello", "authToken": "t", "capabilities": old})
    )
    caps = frame.capabilities  # type: ignore[union-attr]
    assert caps.auto_update is True and caps.start_minimised is True
    assert caps.only_when_idle is False
    assert caps.task_kinds == [] and caps.supported_models_per_kind == {}


def test_complete_json_keeps_null_results() -> None:
    frame = decode_worker_frame('{"type":"completeJson","jobId":"j","result":null}')
    assert json.loads(encode(frame)) == {"type": "completeJson", "jobId": "j", "result": None}


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("not json", "not JSON"),
        ("[1,2]", "not a JSON object"),
        ('{"no":"type"}', "no string `type`"),
        ('{"type":"surprise"}', "surprise"),
        ('{"type":"welcome"}', "workerId"),
        ('{"type":"offer","claim":{"jobId":"j1"}}', "offer"),
        ('{"type":"error","code":"made_up","message":"x"}', "code"),
        (b"\x00\x01", "binary"),
    ],
)
def test_malformed_studio_frames_raise_readable_errors(text: str | bytes, needle: str) -> None:
    with pytest.raises(FrameError) as info:
        decode_studio_frame(text)
    assert needle in info.value.reason


def test_unreadable_offer_names_its_job() -> None:
    with pytest.raises(FrameError) as info:
        decode_studio_frame('{"type":"offer","claim":{"jobId":"j1","task":{"kind":"hologram"}}}')
    assert info.value.offer_job_id == "j1"


def test_an_offer_without_task_or_model_source_is_refused() -> None:
    claim = {"jobId": "j", "gameId": "g", "assetName": "a", "model": "m", "vramGbEstimate": 1}
    for missing in (
        {"modelSource": {"engine": "synthetic"}},
        {"task": {"kind": "llm", "messages": []}},
    ):
        with pytest.raises(FrameError):
            decode_studio_frame(json.dumps({"type": "offer", "claim": {**claim, **missing}}))
