"""The WebSocket frame decoders under arbitrary input: a frame or a FrameError, never any
other exception, and every call bounded in time (protocol §3.3-§3.4)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from studio_worker.protocol.frames import FrameError, decode_studio_frame, decode_worker_frame

from ._profile import fuzz, timed

GOLDEN = Path(__file__).resolve().parents[1] / "protocol" / "golden"
STUDIO_GOLDEN = [
    json.loads(line) for line in (GOLDEN / "studio_frames.jsonl").read_text().splitlines() if line
]
WORKER_GOLDEN = [
    json.loads(line) for line in (GOLDEN / "worker_frames.jsonl").read_text().splitlines() if line
]
DECODERS = [decode_studio_frame, decode_worker_frame]

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=40)
)
json_values = st.recursive(
    json_scalars,
    lambda inner: (
        st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=12), inner, max_size=5)
    ),
    max_leaves=25,
)
frame_types = st.sampled_from(
    [
        "hello", "heartbeat", "accept", "reject", "completeJson", "fail", "logBatch",
        "readyForMore", "welcome", "offer", "heartbeatAck", "completeAck", "failAck", "error",
        "", "Offer", "unknown",
    ]
)  # fmt: skip


def check(decoder: Any, payload: str | bytes) -> None:
    try:
        timed(decoder, payload)
    except FrameError as exc:
        assert exc.reason  # a readable reason, never an empty one
        assert isinstance(exc.reason, str)


@pytest.mark.parametrize("decoder", DECODERS)
@fuzz(80)
@given(payload=st.text(max_size=300) | st.binary(max_size=300))
def test_arbitrary_text_and_bytes(decoder: Any, payload: str | bytes) -> None:
    check(decoder, payload)


@pytest.mark.parametrize("decoder", DECODERS)
@fuzz(80)
@given(value=json_values)
def test_arbitrary_json_values(decoder: Any, value: Any) -> None:
    check(decoder, json.dumps(value))


@pytest.mark.parametrize("decoder", DECODERS)
@fuzz(80)
@given(kind=frame_types, body=st.dictionaries(st.text(max_size=16), json_values, max_size=6))
def test_typed_objects_with_arbitrary_fields(decoder: Any, kind: str, body: dict[str, Any]) -> None:
    check(decoder, json.dumps({**body, "type": kind}))


def _mutate(frame: Any, path: list[int], replacement: Any, drop: bool) -> Any:
    """Replace (or drop) the node reached by following `path` through dicts and lists."""
    if not path or not isinstance(frame, dict | list) or not frame:
        return replacement
    keys = list(frame.keys()) if isinstance(frame, dict) else list(range(len(frame)))
    key = keys[path[0] % len(keys)]
    copy = dict(frame) if isinstance(frame, dict) else list(frame)
    if drop and len(path) == 1:
        del copy[key]
        return copy
    copy[key] = _mutate(frame[key], path[1:], replacement, drop)
    return copy


@fuzz(120)
@given(
    which=st.integers(min_value=0),
    studio=st.booleans(),
    path=st.lists(st.integers(min_value=0, max_value=50), min_size=1, max_size=6),
    replacement=json_values,
    drop=st.booleans(),
)
def test_mutated_golden_frames(
    which: int, studio: bool, path: list[int], replacement: Any, drop: bool
) -> None:
    golden = STUDIO_GOLDEN if studio else WORKER_GOLDEN
    decoder = decode_studio_frame if studio else decode_worker_frame
    frame = golden[which % len(golden)]
    check(decoder, json.dumps(_mutate(frame, path, replacement, drop)))


@fuzz(120)
@given(
    which=st.integers(min_value=0),
    studio=st.booleans(),
    cut=st.integers(min_value=0),
    insert=st.text(max_size=8),
)
def test_truncated_and_spliced_golden_text(which: int, studio: bool, cut: int, insert: str) -> None:
    golden = STUDIO_GOLDEN if studio else WORKER_GOLDEN
    decoder = decode_studio_frame if studio else decode_worker_frame
    text = json.dumps(golden[which % len(golden)], separators=(",", ":"))
    at = cut % (len(text) + 1)
    check(decoder, text[:at])
    check(decoder, text[:at] + insert + text[at:])


def test_the_golden_frames_still_decode() -> None:
    for frame in STUDIO_GOLDEN:
        decode_studio_frame(json.dumps(frame))
    for frame in WORKER_GOLDEN:
        decode_worker_frame(json.dumps(frame))


# ---- hostile shapes the strategies above do not reach -------------------------------
# Known bugs (protocol/frames.py `_parse_object` catches only JSONDecodeError): a deeply
# nested frame raises RecursionError, an integer of more than 4300 digits a plain
# ValueError. Both escape `except FrameError` in the session machine and the studio hub.

HOSTILE = {
    "deep_array": "[" * 100_000,
    "deep_in_offer": '{"type":"offer","claim":' + "[" * 5000 + "]" * 5000 + "}",
    "huge_integer": '{"type":"welcome","workerId":' + "1" * 5000 + ',"serverTime":"t"}',
}


@pytest.mark.parametrize("name", sorted(HOSTILE))
@pytest.mark.parametrize("decoder", DECODERS)
def test_hostile_frames_are_frame_errors(decoder: Any, name: str) -> None:
    with pytest.raises(FrameError):
        timed(decoder, HOSTILE[name])


@pytest.mark.parametrize("decoder", DECODERS)
def test_large_but_flat_frames_are_quick(decoder: Any) -> None:
    big = json.dumps({"type": "logBatch", "entries": [{"x": "y" * 100}] * 20_000})
    check(decoder, big)
    check(decoder, json.dumps({"type": "welcome", "workerId": "w" * 2_000_000}))
