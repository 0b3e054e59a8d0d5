"""`GET /v1/ready`: anyone learns whether the service is ready, only a caller with
credentials learns the checks and the freeze state (its reasons and who froze)."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.conftest import Tokens, auth
from tests.governance_helpers import Team
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.incident.freeze import freeze


def _freeze(runtime: Runtime) -> None:
    freeze(runtime.db, scope="all", wallet=None, reason="suspected key leak", actor="staff:otto")


def test_anonymous_caller_learns_only_whether_ready(client: TestClient, runtime: Runtime) -> None:
    _freeze(runtime)
    answer = client.get("/v1/ready")
    assert answer.status_code == 200
    assert answer.json() == {"ready": True}
    assert "suspected key leak" not in answer.text and "otto" not in answer.text


def test_bad_credentials_get_the_anonymous_answer(client: TestClient, runtime: Runtime) -> None:
    _freeze(runtime)
    answer = client.get("/v1/ready", headers=auth("wst_not-a-real-token"))
    assert answer.status_code == 200
    assert answer.json() == {"ready": True}


def test_token_holder_sees_checks_and_freeze(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    _freeze(runtime)
    body = client.get("/v1/ready", headers=auth(tokens.read_only)).json()
    assert body["ready"] is True
    assert body["checks"]["database"] == "ok"
    assert body["freeze"]["frozen"] is True


def test_staff_session_sees_checks_and_freeze(client: TestClient, runtime: Runtime) -> None:
    _freeze(runtime)
    team = Team(runtime)
    auditor = team.login(team.add("ada", role="auditor", groups=()))
    body = client.get("/v1/ready", headers=auditor.headers()).json()
    assert body["checks"]["signer"] in {"ok", "unavailable"}
    assert body["freeze"]["frozen"] is True
