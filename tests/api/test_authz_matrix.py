"""The authorisation matrix: every endpoint x every token scope and staff role.

Expected: 401 without (valid) credentials; 403 for a principal the endpoint does not admit;
anything else (200, 201, 204, 404, 409, 422 ...) for one it admits: the request passed
authorisation and was judged on its merits. Bodies and ids are chosen so that an admitted
request never fails on authorisation grounds (unknown ids give 404).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import WALLET
from tests.governance_helpers import DEST, Team
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.governance.tokens import SCOPES, create_token

ROLES = ("approver", "operator", "auditor")
ALL_STAFF = frozenset(f"role:{r}" for r in ROLES)
NO_ID = "00000000-0000-0000-0000-000000000000"


@dataclass(frozen=True)
class Row:
    method: str
    path: str
    allowed: frozenset[str]  # "scope:<scope>" and "role:<role>" labels
    body: dict[str, Any] | None = None
    headers: dict[str, str] | None = None


def scopes(*names: str) -> frozenset[str]:
    return frozenset(f"scope:{n}" for n in names)


def roles(*names: str) -> frozenset[str]:
    return frozenset(f"role:{n}" for n in names)


POLICY_TEXT = "version: 1\n"  # invalid document: an admitted caller gets 422

MATRIX: list[Row] = [
    # --- The spine's endpoints: read scopes also admit every staff role; writes are tokens'.
    Row("GET", "/v1/wallets", scopes("read") | ALL_STAFF),
    Row("GET", f"/v1/wallets/{WALLET}", scopes("read") | ALL_STAFF),
    Row("POST", f"/v1/wallets/{WALLET}/deposit-addresses", scopes("addresses:write"), {}),
    Row(
        "GET",
        f"/v1/wallets/{WALLET}/deposit-addresses/current",
        scopes("addresses:read", "read") | ALL_STAFF,
    ),
    Row(
        "GET",
        f"/v1/wallets/{WALLET}/deposit-addresses",
        scopes("addresses:read", "read") | ALL_STAFF,
    ),
    Row(
        "POST",
        "/v1/withdrawals",
        scopes("withdrawals:create"),
        {"wallet": WALLET, "destination": DEST, "amount_sat": 10_000},
        {"Idempotency-Key": "matrix"},
    ),
    Row("GET", "/v1/withdrawals", scopes("withdrawals:read", "read") | ALL_STAFF),
    Row("GET", f"/v1/withdrawals/{NO_ID}", scopes("withdrawals:read", "read") | ALL_STAFF),
    Row("POST", f"/v1/withdrawals/{NO_ID}/cancel", scopes("withdrawals:create"), {}),
    Row(
        "POST",
        "/v1/payout-rounds",
        scopes("withdrawals:create"),
        {"wallet": WALLET, "payouts": [{"destination": DEST, "amount_sat": 10_000}]},
        {"Idempotency-Key": "matrix-round"},
    ),
    Row("GET", "/v1/payout-rounds", scopes("withdrawals:read", "read") | ALL_STAFF),
    Row("GET", f"/v1/payout-rounds/{NO_ID}", scopes("withdrawals:read", "read") | ALL_STAFF),
    # --- Governance.
    Row("DELETE", "/v1/sessions/current", ALL_STAFF),
    Row("GET", "/v1/approvals?pending=true", scopes("read") | ALL_STAFF),
    Row("GET", f"/v1/approvals/{NO_ID}", scopes("read") | ALL_STAFF),
    Row(
        "POST",
        f"/v1/approvals/{NO_ID}",
        roles("approver"),
        {"decision": "approve", "digest": "0" * 64, "totp": "000000"},
    ),
    Row("GET", "/v1/allowlist", scopes("read", "allowlist:propose") | ALL_STAFF),
    Row(
        "POST",
        "/v1/allowlist",
        scopes("allowlist:propose") | roles("approver", "operator"),
        {"wallet": WALLET, "address": DEST, "label": "matrix"},
    ),
    Row(
        "DELETE",
        f"/v1/allowlist/{NO_ID}",
        scopes("allowlist:propose") | roles("approver", "operator"),
    ),
    Row("GET", "/v1/policy", scopes("read") | ALL_STAFF),
    Row("GET", "/v1/policy/proposals", scopes("read") | ALL_STAFF),
    Row(
        "POST",
        "/v1/policy/proposals",
        roles("approver", "operator"),
        {"document": POLICY_TEXT},
    ),
    Row("POST", f"/v1/policy/proposals/{NO_ID}/veto", roles("approver"), {"totp": "000000"}),
    Row("GET", "/v1/audit?after=0&limit=5", scopes("read") | roles("auditor", "operator")),
    # --- Refills from cold: proposing moves nothing (cold keys sign offline).
    Row("POST", f"/v1/wallets/{WALLET}/refills", scopes("sweeps:write") | roles("operator")),
    Row("GET", f"/v1/refills/{NO_ID}", scopes("read") | ALL_STAFF),
    Row(
        "POST",
        f"/v1/refills/{NO_ID}/signatures",
        scopes("sweeps:write") | roles("operator", "approver"),
        {"psbt": "cHNidP8="},
    ),
    Row("POST", f"/v1/refills/{NO_ID}/cancel", scopes("sweeps:write") | roles("operator")),
    # --- Incident response: the theft shield's reports, read like the freezes.
    Row("GET", "/v1/shield/incidents", scopes("read") | ALL_STAFF),
]


@pytest.fixture
def principals(runtime: Runtime) -> dict[str, str]:
    """Label -> bearer secret: one token per scope, one session per staff role."""
    found = {
        f"scope:{scope}": create_token(
            runtime.db, runtime.tags, name=f"only-{scope}", scopes=[scope], actor="test"
        ).secret
        for scope in sorted(SCOPES)
    }
    team = Team(runtime)
    for role in ROLES:
        member = team.login(team.add(f"{role}-1", role=role))
        assert member.token is not None
        found[f"role:{role}"] = member.token
    return found


def call(client: TestClient, row: Row, secret: str | None) -> int:
    headers = dict(row.headers or {})
    if secret is not None:
        headers["Authorization"] = f"Bearer {secret}"
    response = client.request(row.method, row.path, json=row.body, headers=headers)
    body = response.json() if response.content else None
    if response.status_code >= 400:
        assert set(body) == {"error"}, body  # every refusal in the one error shape
    assert response.status_code < 500, body
    return response.status_code


@pytest.mark.parametrize("row", MATRIX, ids=lambda r: f"{r.method} {r.path.split('?')[0]}")
def test_authorisation_matrix(client: TestClient, principals: dict[str, str], row: Row) -> None:
    assert call(client, row, None) == 401
    assert call(client, row, "wsvc_not-a-token") == 401
    assert call(client, row, "wsst_not-a-session") == 401
    outcome = {label: call(client, row, secret) for label, secret in principals.items()}
    # Admitted principals: judged on the merits; everyone else: 403.
    expected = {label: ("admitted" if label in row.allowed else 403) for label in principals}
    got = {
        label: ("admitted" if code not in (401, 403) else code) for label, code in outcome.items()
    }
    assert got == expected


def test_disabled_staff_and_ended_sessions_are_refused_at_once(
    client: TestClient, runtime: Runtime
) -> None:
    from walletsvc.governance.staff import disable_staff

    team = Team(runtime)
    alice = team.login(team.add("alice"))
    bob = team.login(team.add("bob"))
    assert client.get("/v1/policy", headers=alice.headers()).status_code == 200
    disable_staff(runtime.db, runtime.tags, runtime.signer, username="alice", actor="test")
    assert client.get("/v1/policy", headers=alice.headers()).status_code == 401
    assert client.delete("/v1/sessions/current", headers=bob.headers()).status_code == 204
    assert client.get("/v1/policy", headers=bob.headers()).status_code == 401
