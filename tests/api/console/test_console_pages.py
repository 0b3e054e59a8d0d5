"""The console's reading pages against issue 12's list: my queue with all that is needed to
decide, wallets against their thresholds, recent payouts, rounds and sweeps, the allowlist,
the policies in force and pending proposals with their time locks, the audit trail with its
verification state."""

from __future__ import annotations

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select, update

from tests.api.console.helpers import log_in
from tests.api.test_payout_rounds import round_body
from tests.conftest import WALLET, Tokens, auth
from tests.governance_helpers import DEST, Team, big_withdrawal, default_document, principal
from tests.treasury.test_sweeps import with_cold
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import AuditEvent
from walletsvc.governance import approvals
from walletsvc.governance.allowlist import Proposer, propose_entry
from walletsvc.governance.policies import install_policy
from walletsvc.governance.policy_changes import propose as propose_policy
from walletsvc.payouts.intake import show_withdrawal
from walletsvc.policy.document import parse_policy


@pytest.fixture
def team(funded: Runtime) -> Team:
    team = Team(funded)
    team.add("olga", role="operator", groups=())
    team.add("alice")
    team.add("bob")
    return team


def test_my_queue_shows_all_that_is_needed_to_decide(client: TestClient, team: Team) -> None:
    runtime = team.runtime
    payout_id = big_withdrawal(runtime)
    request_id = show_withdrawal(runtime.db, payout_id)["approval_request_id"]
    alice = team.members["alice"]
    digest = approvals.show_request(runtime.db, runtime.tags, request_id)["digest"]
    approvals.decide(
        runtime.db,
        runtime.tags,
        runtime.signer,
        runtime.settings,
        request_id=request_id,
        staff=principal(runtime, alice),
        decision="approve",
        digest=digest,
        totp=alice.live_code(),
        comment="checked the miner's address",
    )
    page = log_in(client, team.members["bob"])
    item = page.split(f'id="request-{request_id}"', 1)[1].split("</article>", 1)[0]
    shown = approvals.show_request(runtime.db, runtime.tags, request_id)
    for expected in (
        f"<code>{DEST}</code>",  # destination
        "20,000,000 sat",  # amount
        "<dt>Policy decision</dt>",
        "<code>approval_tier</code>",  # the rule trace
        f"{shown['requester']} at {shown['created_at']}",  # who asked and when
        "<dd>1<div>alice: approve (checked the miner&#39;s address)",  # approvals so far
        f"<dt>Expires</dt><dd>{shown['expires_at']}</dd>",
        f'<code class="digest">{digest}</code>',
    ):
        assert expected in item, expected


def test_wallets_show_balances_against_ceiling_target_and_floor(
    client: TestClient, team: Team
) -> None:
    log_in(client, team.members["olga"])
    page = client.get("/console/wallets").text
    card = page.split(f'aria-label="Wallet {WALLET}"', 1)[1].split("</article>", 1)[0]
    for expected in (
        "<dt>confirmed</dt>",
        "<dt>Ceiling</dt><dd>500,000,000 sat",
        "<dt>Target</dt><dd>200,000,000 sat",
        "<dt>Floor</dt><dd>50,000,000 sat",
    ):
        assert expected in card, expected
    # The funded wallet holds far more than its ceiling (mined coins): a sweep is due.
    assert "Above its ceiling: a sweep to cold is due." in card


def test_payouts_page_lists_payouts_rounds_and_sweeps(
    client: TestClient, team: Team, tokens: Tokens
) -> None:
    runtime = team.runtime
    with_cold(runtime)
    payout_id = big_withdrawal(runtime, amount=5_000_000)
    made = client.post(
        "/v1/payout-rounds", json=round_body([60_000, 70_000]), headers=auth(tokens.all, "r1")
    )
    assert made.status_code == 201, made.text
    swept = client.post(f"/v1/wallets/{WALLET}/sweeps", headers=auth(tokens.all))
    assert swept.status_code == 201, swept.text
    log_in(client, team.members["olga"])
    page = client.get("/console/payouts").text
    assert f'id="payout-{payout_id}"' in page
    round_row = page.split(f'id="round-{made.json()["id"]}"', 1)[1].split("</tr>", 1)[0]
    assert "pplns round 812" in round_row and "130,000 sat" in round_row
    assert "approved: 2" in round_row
    assert swept.json()["id"] in page and swept.json()["txid"] in page


def test_allowlist_page_shows_entries_with_cooling_off_and_integrity(
    client: TestClient, team: Team
) -> None:
    runtime = team.runtime
    alice = team.members["alice"]
    propose_entry(
        runtime.db,
        runtime.tags,
        wallet=WALLET,
        address=DEST,
        label="exchange hot wallet",
        proposer=Proposer("staff:alice", alice.staff_id),
    )
    log_in(client, team.members["olga"])
    page = client.get("/console/allowlist").text
    row = page.split(f"<code>{DEST}</code>", 1)[1].split("</tr>", 1)[0]
    assert "exchange hot wallet" in row and "<td>pending</td>" in row
    assert "staff:alice" in row and "<td>ok</td>" in row


def test_policy_page_shows_the_policies_in_force_and_pending_proposals(
    client: TestClient, team: Team
) -> None:
    runtime = team.runtime
    own = default_document(max_per_payout_sat=40_000_000)
    with runtime.db.write() as uow:
        wallet = uow.wallets.by_name(WALLET)
        assert wallet is not None
        install_policy(uow, runtime.tags, parse_policy(own), wallet_id=wallet.id, actor="test")
    loosened = default_document(max_per_payout_sat=90_000_000)
    proposal_id = propose_policy(
        runtime.db,
        runtime.tags,
        document=loosened,
        proposer=principal(runtime, team.members["alice"]),
    )
    log_in(client, team.members["olga"])
    page = client.get("/console/policy").text
    section = page.split(f'aria-label="Policy of wallet {WALLET}"', 1)[1].split("</section>", 1)[0]
    assert '"max_per_payout_sat": 40000000' in section
    row = page.split(f'id="proposal-{proposal_id}"', 1)[1].split("</tr>", 1)[0]
    assert "loosen" in row and "pending" in row and "(2 of treasury)" in row
    assert f"<td>{48 * 3600} s</td>" in row  # the time lock of a loosening change
    assert "all (the default)" in row


def test_audit_page_shows_the_verification_state(client: TestClient, team: Team) -> None:
    runtime = team.runtime
    big_withdrawal(runtime)
    log_in(client, team.members["olga"])
    page = client.get("/console/audit").text
    assert "Verified: the hash chain of" in page and "withdrawal.requested" in page
    with runtime.db.write() as uow:
        first = uow.session.scalar(select(func.min(AuditEvent.seq)))
        uow.session.execute(
            update(AuditEvent).where(AuditEvent.seq == first).values(actor="someone else")
        )
    tampered = client.get("/console/audit").text
    assert "Verification FAILED" in tampered
    assert client.get("/console/audit").status_code == 200
