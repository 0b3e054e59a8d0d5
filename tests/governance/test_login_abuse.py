"""Login abuse: wrong passwords slow the guesser down without locking the real person out,
and an unknown username is answered exactly like a known one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.governance_helpers import PASSWORD, Member, Team
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models_governance import Staff
from walletsvc.domain.errors import DomainError, InvalidCredentials
from walletsvc.governance import sessions, staff
from walletsvc.governance.login_throttle import LoginThrottled
from walletsvc.governance.sessions import CreatedSession, login

OUTSIDER = "203.0.113.9"
APPROVER_DESK = "198.51.100.7"


def _login(
    runtime: Runtime, username: str, password: str, totp: str, *, client: str
) -> CreatedSession:
    return login(
        runtime.db,
        runtime.tags,
        runtime.signer,
        runtime.settings,
        username=username,
        password=password,
        totp=totp,
        client=client,
        throttle=runtime.login_throttle,
    )


def _guess(runtime: Runtime, username: str, *, client: str = OUTSIDER) -> DomainError:
    with pytest.raises(DomainError) as caught:
        _login(runtime, username, "not the password", "123456", client=client)
    return caught.value


def test_outsiders_wrong_passwords_do_not_lock_out_the_approver(runtime: Runtime) -> None:
    alice = Team(runtime).add("alice")
    answers = [_guess(runtime, "alice") for _ in range(20)]
    assert all(isinstance(a, InvalidCredentials | LoginThrottled) for a in answers)
    assert isinstance(answers[-1], LoginThrottled), "the guesser is slowed down"

    session = _login(runtime, "alice", PASSWORD, alice.live_code(), client=APPROVER_DESK)
    assert session.principal.username == "alice"
    with runtime.db.read() as uow:
        row = uow.session.get(Staff, alice.staff_id)
        assert row is not None and row.locked_until is None and row.failed_attempts == 0


def test_known_and_unknown_usernames_answer_alike(runtime: Runtime) -> None:
    Team(runtime).add("alice")
    known = [_guess(runtime, "alice", client="192.0.2.1") for _ in range(7)]
    unknown = [_guess(runtime, "mallory", client="192.0.2.2") for _ in range(7)]

    def shape(error: DomainError) -> tuple[Any, ...]:
        return type(error), error.code, getattr(error, "retry_after_s", None) is not None

    assert [shape(e) for e in known] == [shape(e) for e in unknown]
    assert [e.message for e in known[:4]] == [e.message for e in unknown[:4]]
    assert isinstance(known[-1], LoginThrottled)


def test_unknown_usernames_cost_a_password_hash_too(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    checked: list[bool] = []
    real = staff.verify_password

    def spy(row: Any, password: str) -> bool:
        checked.append(row is None)
        return real(row, password)

    monkeypatch.setattr(sessions, "verify_password", spy)  # the name sessions calls
    _guess(runtime, "nobody-here")
    assert checked == [True]


def _never_valid_code(member: Member) -> str:
    """A code no step near now accepts (checked over a wide span, so no clock edge matters)."""
    near = {member.code_at(datetime.now(UTC) + timedelta(seconds=s)) for s in range(-300, 301, 30)}
    return next(c for c in ("000000", "111111", "222222", "333333") if c not in near)


def test_the_lock_follows_wrong_codes_after_a_right_password_only(runtime: Runtime) -> None:
    alice = Team(runtime).add("alice")
    wrong = _never_valid_code(alice)
    for _ in range(runtime.settings.totp_max_failures):
        with pytest.raises(DomainError):
            _login(runtime, "alice", PASSWORD, wrong, client=APPROVER_DESK)
    with runtime.db.read() as uow:
        row = uow.session.get(Staff, alice.staff_id)
        assert row is not None and row.locked_until is not None
    # A locked account does not tell a guesser that it exists: a wrong password answers as
    # for anyone else.
    assert isinstance(_guess(runtime, "alice", client="192.0.2.77"), InvalidCredentials)


def test_http_throttle_answers_429_with_retry_after(client: TestClient, runtime: Runtime) -> None:
    Team(runtime).add("alice")
    body = {"username": "alice", "password": "wrong", "totp": "123456"}
    answers = [client.post("/v1/sessions", json=body) for _ in range(6)]
    assert [a.status_code for a in answers[:4]] == [401] * 4
    throttled = answers[-1]
    assert throttled.status_code == 429
    assert int(throttled.headers["Retry-After"]) > 0
    assert throttled.json()["error"]["code"] == "rate_limited"
    assert set(throttled.json()["error"]) == {"code", "message", "field"}
