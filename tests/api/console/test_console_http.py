"""The console over real HTTP (no browser): log in, decide, freeze, and every refusal."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient

from tests.api.console.helpers import csrf_of, log_in
from tests.governance_helpers import Team, big_withdrawal
from walletsvc.bootstrap.runtime import Runtime


@pytest.fixture
def team(funded: Runtime) -> Team:
    team = Team(funded)
    team.add("alice")
    team.add("bob")
    return team


def test_smoke(client: TestClient, team: Team) -> None:
    request_id = big_withdrawal(team.runtime)
    page = log_in(client, team.members["alice"])
    assert "Approve" in page
    print(page)
