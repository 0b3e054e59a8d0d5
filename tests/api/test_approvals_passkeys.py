"""Approvals with a passkey over real HTTP: `{passkey: assertion}` in place of `totp`."""

from __future__ import annotations

import json

import pytest
from fastapi.testclient import TestClient

from tests.api.test_approvals_api import login
from tests.governance_helpers import Team, big_withdrawal
from tests.signer_helpers import use_relying_party
from tests.soft_authenticator import SoftAuthenticator
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models_staff_auth import StaffPasskey
from walletsvc.governance.approvals import show_request
from walletsvc.governance.passkeys import RelyingParty, approval_challenge, register_passkey
from walletsvc.payouts.intake import show_withdrawal

# TestClient's requests come from http://testserver: the console's origin for these tests.
RP = RelyingParty(rp_id="testserver", origin="http://testserver")


@pytest.fixture
def team(funded: Runtime) -> Team:
    use_relying_party(funded.settings, RP.rp_id, RP.origin)  # the signer verifies passkeys
    team = Team(funded)
    team.add("alice")
    team.add("bob")
    return team


def _with_passkey(team: Team, name: str) -> SoftAuthenticator:
    runtime, member = team.runtime, team.members[name]
    device = SoftAuthenticator(RP.rp_id, RP.origin)
    challenge = b"a session's registration challenge"
    from tests.governance_helpers import principal

    register_passkey(
        runtime.db,
        runtime.tags,
        runtime.signer,
        runtime.settings,
        RP,
        principal(runtime, member),
        challenge=challenge,
        credential=device.register(challenge),
        totp=member.live_code(),
        label="test key",
    )
    return device


def _request(team: Team) -> tuple[str, str]:
    runtime = team.runtime
    request_id = show_withdrawal(runtime.db, big_withdrawal(runtime))["approval_request_id"]
    return request_id, show_request(runtime.db, runtime.tags, request_id)["digest"]


def test_two_passkey_approvals_release_a_payout(client: TestClient, team: Team) -> None:
    request_id, digest = _request(team)
    for name in ("alice", "bob"):
        device = _with_passkey(team, name)
        headers = login(client, team, name)
        assertion = json.loads(device.assert_(approval_challenge(digest, "approve")))
        decided = client.post(
            f"/v1/approvals/{request_id}",
            json={"decision": "approve", "digest": digest, "passkey": assertion},
            headers=headers,
        )
        assert decided.status_code == 200, decided.text
    assert decided.json()["status"] == "approved"


def test_a_passkey_signature_of_another_decision_or_digest_is_refused(
    client: TestClient, team: Team
) -> None:
    request_id, digest = _request(team)
    device = _with_passkey(team, "alice")
    headers = login(client, team, "alice")
    # Signed "reject" (or other content), sent as "approve": a relayed, rewritten decision.
    for signed in (approval_challenge(digest, "reject"), approval_challenge("00" * 32, "approve")):
        refused = client.post(
            f"/v1/approvals/{request_id}",
            json={
                "decision": "approve",
                "digest": digest,
                "passkey": json.loads(device.assert_(signed)),
            },
            headers=headers,
        )
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["field"] == "passkey"
    assert show_request(team.runtime.db, team.runtime.tags, request_id)["decisions"] == []


def test_a_passkey_written_into_the_database_does_not_count(client: TestClient, team: Team) -> None:
    request_id, digest = _request(team)
    runtime = team.runtime
    planted = SoftAuthenticator(RP.rp_id, RP.origin)
    registered = json.loads(planted.register(b"x"))
    from walletsvc.keys.passkeys import verify_registration

    stored = verify_registration(RP, json.dumps(registered), challenge=b"x")
    with runtime.db.write() as uow:  # no KEK: no valid tag
        uow.staff_passkeys.add(
            StaffPasskey(
                staff_id=team.members["alice"].staff_id,
                credential_id=stored.credential_id,
                public_key=stored.public_key,
                sign_count=0,
                label="planted",
                mac="0" * 64,
            )
        )
    refused = client.post(
        f"/v1/approvals/{request_id}",
        json={
            "decision": "approve",
            "digest": digest,
            "passkey": json.loads(planted.assert_(approval_challenge(digest, "approve"))),
        },
        headers=login(client, team, "alice"),
    )
    assert refused.status_code == 403
    assert show_request(runtime.db, runtime.tags, request_id)["decisions"] == []


def test_exactly_one_step_up_is_given(client: TestClient, team: Team) -> None:
    request_id, digest = _request(team)
    headers = login(client, team, "alice")
    for extra in ({}, {"totp": "123456", "passkey": {"id": "x"}}):
        refused = client.post(
            f"/v1/approvals/{request_id}",
            json={"decision": "approve", "digest": digest, **extra},
            headers=headers,
        )
        assert refused.status_code == 422
        assert refused.json()["error"]["field"] == "totp"
