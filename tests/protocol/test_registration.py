"""The pure registration machine (protocol §6), table-driven: no event loop, no I/O."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from studio_worker.protocol.registration import (
    REJECTED_MESSAGE,
    Credentials,
    PollRequest,
    PostRequest,
    RegistrationMachine,
    RegState,
    format_install_id,
    secret_hash,
)

IID = "00112233-4455-6677-8899-aabbccddeeff"
SECRET = "5e" * 32
PENDING = Credentials(install_id=IID, registration_request_id="rr-1", registration_secret=SECRET)
APPROVED = Credentials(install_id=IID, worker_id="w-1", auth_token="tok")


@pytest.mark.parametrize(
    ("creds", "state"),
    [
        (Credentials(), RegState.PRISTINE),
        (Credentials(install_id=IID, registration_secret=SECRET), RegState.PRISTINE),
        (PENDING, RegState.PENDING),
        (APPROVED, RegState.APPROVED),
        (Credentials(worker_id="w-1"), RegState.PRISTINE),  # half a credential is none
        (Credentials(auth_token="tok"), RegState.PRISTINE),
    ],
)
def test_initial_state(creds: Credentials, state: RegState) -> None:
    assert RegistrationMachine(creds).state is state


@pytest.mark.parametrize(
    ("creds", "changed", "expected"),
    [
        (Credentials(), True, Credentials(install_id="new-id", registration_secret="new-s")),
        (
            Credentials(install_id=IID),
            True,
            Credentials(install_id=IID, registration_secret="new-s"),
        ),
        (Credentials(install_id=IID, registration_secret=SECRET), False, None),
        (PENDING, False, None),
        # a request id without a secret keeps the id and gets no new secret
        (
            Credentials(install_id=IID, registration_request_id="rr-1"),
            False,
            None,
        ),
    ],
)
def test_prepare(creds: Credentials, changed: bool, expected: Credentials | None) -> None:
    m = RegistrationMachine(creds)
    assert m.prepare("new-id", "new-s") is changed
    assert m.creds == (expected or creds)


def test_next_call_needs_prepare() -> None:
    with pytest.raises(RuntimeError):
        RegistrationMachine(Credentials()).next_call()


@pytest.mark.parametrize(
    ("creds", "call"),
    [
        (
            Credentials(install_id=IID, registration_secret=SECRET),
            PostRequest(IID, hashlib.sha256(SECRET.encode()).hexdigest()),
        ),
        (PENDING, PollRequest("rr-1", SECRET)),
        (APPROVED, None),
    ],
)
def test_next_call(creds: Credentials, call: object) -> None:
    assert RegistrationMachine(creds).next_call() == call


def test_post_succeeded_goes_pending_with_since() -> None:
    m = RegistrationMachine(Credentials(install_id=IID, registration_secret=SECRET))
    m.post_succeeded("rr-9", "t0")
    assert m.state is RegState.PENDING
    assert m.creds.registration_request_id == "rr-9"
    assert m.snapshot() == {"state": "pending", "requestId": "rr-9", "since": "t0"}


CLEARED = Credentials(install_id=IID)


@pytest.mark.parametrize(
    ("status", "body", "state", "creds", "snapshot"),
    [
        (200, {"status": "pending"}, RegState.PENDING, PENDING, None),
        (
            200,
            {"status": "approved", "workerId": "w-2", "authToken": "t-2"},
            RegState.APPROVED,
            Credentials(install_id=IID, worker_id="w-2", auth_token="t-2"),
            {"state": "approved"},
        ),
        (
            200,
            {"status": "rejected", "reason": "nope"},
            RegState.REJECTED,
            CLEARED,
            {"state": "rejected", "reason": "nope"},
        ),
        (200, {"status": "rejected"}, RegState.REJECTED, CLEARED, None),
        (200, {"status": "rejected", "reason": None}, RegState.REJECTED, CLEARED, None),
        (404, None, RegState.PRISTINE, CLEARED, {"state": "pristine"}),
        (
            404,
            {"status": "approved", "workerId": "w", "authToken": "t"},
            RegState.PRISTINE,
            CLEARED,
            None,
        ),
        (401, None, RegState.PENDING, PENDING, None),
        (500, {"status": "approved"}, RegState.PENDING, PENDING, None),
        (0, None, RegState.PENDING, PENDING, None),  # transport error
        (200, None, RegState.PENDING, PENDING, None),  # unreadable body
        (200, ["status"], RegState.PENDING, PENDING, None),
        (200, {"status": "weird"}, RegState.PENDING, PENDING, None),
        # approved without a usable id/token is not an approval
        (
            200,
            {"status": "approved", "workerId": "", "authToken": "t"},
            RegState.PENDING,
            PENDING,
            None,
        ),
        (200, {"status": "approved", "workerId": "w"}, RegState.PENDING, PENDING, None),
        (
            200,
            {"status": "approved", "workerId": 5, "authToken": "t"},
            RegState.PENDING,
            PENDING,
            None,
        ),
    ],
)
def test_poll_answered(
    status: int,
    body: Any,
    state: RegState,
    creds: Credentials,
    snapshot: dict[str, str] | None,
) -> None:
    m = RegistrationMachine(PENDING)
    m.poll_answered(status, body, "t1")
    assert m.state is state
    assert m.creds == creds
    if snapshot is not None:
        assert m.snapshot() == snapshot


def test_since_is_first_seen_and_not_reset_by_later_polls() -> None:
    m = RegistrationMachine(PENDING)
    assert m.since is None
    for now in ("t1", "t2", "t3"):
        m.poll_answered(200, {"status": "pending"}, now)
    assert m.snapshot() == {"state": "pending", "requestId": "rr-1", "since": "t1"}
    m.poll_answered(503, None, "t4")
    assert m.since == "t1"


def test_404_then_fresh_request_gets_new_secret() -> None:
    m = RegistrationMachine(PENDING)
    m.poll_answered(404, None, "t1")
    assert m.since is None
    assert m.prepare("ignored", "fresh") is True
    assert m.creds == Credentials(install_id=IID, registration_secret="fresh")
    assert m.next_call() == PostRequest(IID, secret_hash("fresh"))


def test_reset_forgets_everything() -> None:
    m = RegistrationMachine(PENDING)
    m.poll_answered(200, {"status": "rejected", "reason": "r"}, "t1")
    assert m.next_call() is None
    m.reset()
    assert m.state is RegState.PRISTINE
    assert m.creds == Credentials()
    assert m.snapshot() == {"state": "pristine"}


def test_secret_hash_and_install_id_format() -> None:
    assert secret_hash("abc") == hashlib.sha256(b"abc").hexdigest()
    assert format_install_id(bytes(range(16))) == "00010203-0405-0607-0809-0a0b0c0d0e0f"
    with pytest.raises(ValueError):
        format_install_id(b"short")


def test_rejected_message_text() -> None:
    assert REJECTED_MESSAGE.format(reason="no") == (
        "registration rejected by the studio operator: no.  Run `studio-worker register "
        "--reset` to clear local state and submit a fresh request."
    )
