"""Issue 9: an attacker with write access to the database moves 0 satoshis.

The service runs as in production (real HTTP through the app, the worker's background passes,
the chain: tests.fakechain, whose scripts the kernel still checks); the attacker holds a raw SQL
connection (``text()`` on the engine, never our repositories), so nothing they do is audited,
locked or tagged. Every case asserts the same four things:

  * money: the chain pays nobody the policy did not allow, and nobody twice;
  * ``audit verify`` (the code the CLI runs) names the edit;
  * the use path refuses the edited row;
  * where money was at stake, the wallet ends up frozen.

Two cases only the separate signer wins (its ledger of withdrawal ids it signed, its anchor
of the audit head: walletsvc.signer, issue 9); docs/threat-model.md names them.
"""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from bitcoin.core import CBlock
from fastapi.testclient import TestClient
from sqlalchemy import text

from tests.conftest import WALLET, Tokens, auth
from tests.governance_helpers import (
    PASSWORD,
    Member,
    Team,
    default_document,
    install,
    with_ops_group,
)
from tests.helpers import dev_chain, external_destination, run_cli, verify_audit
from tests.signer.helpers import coins, plan_paying, plan_sweep_to
from tests.signer_helpers import install_policy_in_signer
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.domain.access import SCOPES
from walletsvc.domain.errors import SigningRefused
from walletsvc.domain.transaction import ApprovedPayout
from walletsvc.governance.tokens import hash_token
from walletsvc.policy.document import parse_policy, policy_hash
from walletsvc.wallets.freezes import withdrawals_freeze
from walletsvc.wallets.service import get_wallet

MINER, MINER_SCRIPT = external_destination("db-writer: honest miner")
THIEF, THIEF_SCRIPT = external_destination("db-writer: thief")
SMALL = 1_500_000  # below the default policy's 0.1 BTC tier: approved at once
BIG = 15_000_000  # above it: two treasury approvers


# --- the scene: a running, funded service and an attacker's SQL connection ------------------


@dataclass
class Scene:
    runtime: Runtime
    client: TestClient
    tokens: Tokens
    team: Team
    # The payouts the policy and the people allowed, once each: what the chain may show.
    allowed: Counter[tuple[str, int]] = field(default_factory=Counter)

    def sql(self, statement: str, **params: Any) -> None:
        """The attacker: one raw statement in its own transaction (no audit, no lock)."""
        with self.runtime.db.engine.begin() as conn:
            conn.execute(text(statement), params)

    def scalar(self, statement: str, **params: Any) -> Any:
        with self.runtime.db.engine.connect() as conn:
            return conn.execute(text(statement), params).scalar()

    def payout(self, key: str, amount: int, destination: str = MINER) -> dict[str, Any]:
        response = self.client.post(
            "/v1/withdrawals",
            json={"wallet": WALLET, "destination": destination, "amount_sat": amount},
            headers=auth(self.tokens.all, key),
        )
        assert response.status_code == 201, response.text
        body: dict[str, Any] = response.json()
        return body

    def login(self, name: str) -> dict[str, str]:
        member = self.team.members[name]
        response = self.client.post(
            "/v1/sessions",
            json={"username": name, "password": PASSWORD, "totp": member.live_code()},
        )
        assert response.status_code == 201, response.text
        return {"Authorization": f"Bearer {response.json()['token']}"}

    def decide(
        self, name: str, headers: dict[str, str], request_id: str, digest: str, totp: str = ""
    ) -> Any:
        member: Member = self.team.members[name]
        return self.client.post(
            f"/v1/approvals/{request_id}",
            json={"decision": "approve", "digest": digest, "totp": totp or member.live_code()},
            headers=headers,
        )

    def pay_honestly(self, key: str) -> dict[str, Any]:
        """A small payout the policy allows, paid and confirmed."""
        payout = self.payout(key, SMALL)
        assert payout["status"] == "approved"
        self.allowed[(MINER_SCRIPT.hex(), SMALL)] += 1
        self.run()
        return payout

    def run(self, passes: int = 3) -> None:
        """Background passes with a block between them: whatever will be paid, is."""
        chain = dev_chain(self.runtime)
        for _ in range(passes):
            self.runtime.background_pass()
            chain.mine(1)
        self.runtime.background_pass()

    def status(self, withdrawal_id: str) -> str:
        return str(self.scalar("SELECT status FROM withdrawals WHERE id = :id", id=withdrawal_id))

    # -- the four assertions -------------------------------------------------------------

    def assert_verify_names(self, *expected: str) -> None:
        problems = verify_audit(self.runtime).problems
        for finding in expected:
            assert any(finding in p for p in problems), (finding, problems)

    def assert_no_money_lost(self) -> None:
        """Read the chain: every output that is not ours pays an allowed payout, once."""
        paid = Counter(self._outputs_to_others())
        assert THIEF_SCRIPT.hex() not in {script for script, _ in paid}, paid
        assert paid == self.allowed, f"paid {dict(paid)}, allowed {dict(self.allowed)}"

    def assert_frozen(self) -> None:
        self.runtime.background_pass()  # the risk monitor acts on what the last pass found
        with self.runtime.db.read() as uow:
            wallet = get_wallet(uow, WALLET)
            assert withdrawals_freeze(uow, wallet.id) is not None, "the wallet is not frozen"

    def assert_integrity_failure_audited(self) -> None:
        count = self.scalar("SELECT count(*) FROM audit_events WHERE action = 'integrity.failure'")
        assert count >= 1

    def _outputs_to_others(self) -> Iterator[tuple[str, int]]:
        chain = dev_chain(self.runtime)
        scripts: list[tuple[str, int]] = []
        for height in range(1, chain.tip().height + 1):
            block_hash = chain.block_hash(height)
            assert block_hash is not None
            block = CBlock.deserialize(chain.block_bytes(block_hash))
            for tx in block.vtx[1:]:  # the coinbases are the funding, not payouts
                scripts += [(bytes(o.scriptPubKey).hex(), int(o.nValue)) for o in tx.vout]
        with self.runtime.db.read() as uow:
            ours = uow.addresses.ours_among([s for s, _ in scripts])
        return (output for output in scripts if output[0] not in ours)


@pytest.fixture
def scene(client: TestClient, funded: Runtime, tokens: Tokens) -> Scene:
    with_ops_group(funded)  # eve's group: staff can only be in groups the policy names
    team = Team(funded)
    for name in ("alice", "bob", "carol"):
        team.add(name)
    team.add("otto", role="operator")
    team.add("eve", groups=("ops",))
    return Scene(funded, client, tokens, team)


def _pending_big(scene: Scene, key: str) -> tuple[dict[str, Any], str]:
    """A 0.15 BTC payout waiting for two treasury approvers, and the digest they are shown."""
    payout = scene.payout(key, BIG)
    assert payout["status"] == "pending_approval"
    shown = scene.client.get(
        f"/v1/approvals/{payout['approval_request_id']}", headers=auth(scene.tokens.read_only)
    )
    assert shown.status_code == 200, shown.text
    return payout, str(shown.json()["digest"])


def _the_signer_refuses_itself(
    scene: Scene, plan_outputs: list[ApprovedPayout] | bytes, match: str
) -> None:
    """Skip the service's checks (as if its own copy had been fooled too) and ask the signer
    directly: it judges from its own ledger and copies, which no database write reaches."""
    runtime = scene.runtime
    available = coins(runtime)[:1]
    if isinstance(plan_outputs, bytes):
        plan = plan_sweep_to(runtime, plan_outputs, using=available)
        with pytest.raises(SigningRefused, match=match):
            runtime.signer.sign(wallet=WALLET, kind="sweep", plan=plan, approved=[])
    else:
        plan = plan_paying(runtime, plan_outputs, using=available)
        with pytest.raises(SigningRefused, match=match):
            runtime.signer.sign(wallet=WALLET, kind="payout", plan=plan, approved=plan_outputs)
    assert runtime.signer.status()["signed_transactions"] == 0


def _refused_as_integrity_failure(response: Any) -> None:
    assert response.status_code in (409, 500), response.text
    assert response.json()["error"]["code"] == "integrity_failure"


# --- payouts --------------------------------------------------------------------------------


def test_a_pending_payout_rewritten_then_approved_through_the_api_pays_nothing(
    scene: Scene,
) -> None:
    payout, digest = _pending_big(scene, "pending-rewrite")
    scene.sql(
        "UPDATE withdrawals SET amount_sat = 300000000, destination = :address,"
        " script_pubkey = :script WHERE id = :id",
        address=THIEF,
        script=THIEF_SCRIPT.hex(),
        id=payout["id"],
    )
    scene.assert_verify_names(f"approval request {payout['approval_request_id']} has a withdrawal")
    for name in ("alice", "bob"):  # they approve what they were shown
        refused = scene.decide(name, scene.login(name), payout["approval_request_id"], digest)
        _refused_as_integrity_failure(refused)
    scene.run()
    assert scene.status(payout["id"]) == "pending_approval"
    scene.assert_no_money_lost()
    scene.assert_frozen()


@pytest.mark.parametrize("edit", ["amount", "destination", "tag removed"])
def test_an_approved_payout_rewritten_is_never_signed(scene: Scene, edit: str) -> None:
    payout = scene.payout(f"approved-{edit}", SMALL)
    assert payout["status"] == "approved"
    statement = {
        "amount": "UPDATE withdrawals SET amount_sat = 49000000 WHERE id = :id",
        "destination": "UPDATE withdrawals SET destination = :address, script_pubkey = :script"
        " WHERE id = :id",
        "tag removed": "UPDATE withdrawals SET authorization_mac = NULL WHERE id = :id",
    }[edit]
    scene.sql(statement, id=payout["id"], address=THIEF, script=THIEF_SCRIPT.hex())
    scene.assert_verify_names(f"approved withdrawal {payout['id']} fails its integrity tag")
    scene.run()
    assert scene.status(payout["id"]) == "failed"
    scene.assert_integrity_failure_audited()
    scene.assert_no_money_lost()
    scene.assert_frozen()


def test_forged_approvals_do_not_count_and_freeze(scene: Scene) -> None:
    payout, digest = _pending_big(scene, "forged-approvals")
    request_id = payout["approval_request_id"]
    forged = {name: str(uuid.uuid4()) for name in ("bob", "carol")}
    for name, decision_id in forged.items():  # two "approvals" nobody gave
        scene.sql(
            "INSERT INTO approval_decisions (id, request_id, staff_id, decision, digest,"
            " totp_step, created_at, mac)"
            " VALUES (:id, :request, :staff, 'approve', :digest, 1, :now, :mac)",
            id=decision_id,
            request=request_id,
            staff=scene.team.members[name].staff_id,
            digest=digest,
            now=datetime.now(UTC),
            mac="0" * 64,
        )
    scene.assert_verify_names(
        *(f"approval decision {d} fails its integrity tag" for d in forged.values())
    )
    decided = scene.decide("alice", scene.login("alice"), request_id, digest)
    assert decided.status_code == 200, decided.text
    assert (decided.json()["status"], decided.json()["approvals_counted"]) == ("pending", 1)
    scene.run()
    assert scene.status(payout["id"]) == "pending_approval"
    scene.assert_integrity_failure_audited()
    scene.assert_no_money_lost()
    scene.assert_frozen()


def _close(scene: Scene, closed: str, payout: dict[str, Any], digest: str) -> None:
    request_id = payout["approval_request_id"]
    if closed == "rejected":
        headers = scene.login("alice")
        response = scene.client.post(
            f"/v1/approvals/{request_id}",
            json={
                "decision": "reject",
                "digest": digest,
                "totp": scene.team.members["alice"].live_code(),
            },
            headers=headers,
        )
        assert response.status_code == 200, response.text
    elif closed == "cancelled":
        response = scene.client.post(
            f"/v1/withdrawals/{payout['id']}/cancel", headers=auth(scene.tokens.all)
        )
        assert response.status_code == 200, response.text
    else:
        scene.runtime.governance_tick(now=datetime.now(UTC) + timedelta(hours=25))
    assert scene.status(payout["id"]) == closed


@pytest.mark.parametrize("closed", ["rejected", "cancelled", "expired"])
def test_a_closed_payout_flipped_to_approved_is_never_signed(scene: Scene, closed: str) -> None:
    payout, digest = _pending_big(scene, f"closed-{closed}")
    _close(scene, closed, payout, digest)
    scene.sql(
        "UPDATE approval_requests SET status = 'approved' WHERE id = :id",
        id=payout["approval_request_id"],
    )
    scene.sql("UPDATE withdrawals SET status = 'approved' WHERE id = :id", id=payout["id"])
    scene.assert_verify_names(
        f"approved withdrawal {payout['id']} fails its integrity tag",
        f"approval request {payout['approval_request_id']} is approved without m genuine",
    )
    scene.run()
    assert scene.status(payout["id"]) == "failed"
    scene.assert_integrity_failure_audited()
    scene.assert_no_money_lost()
    scene.assert_frozen()


def test_a_confirmed_payout_flipped_back_to_approved_is_not_paid_again(scene: Scene) -> None:
    payout = scene.pay_honestly("confirmed-flip")
    assert scene.status(payout["id"]) == "confirmed"
    scene.sql("UPDATE withdrawals SET status = 'approved' WHERE id = :id", id=payout["id"])
    scene.assert_verify_names(f"approved withdrawal {payout['id']} already belongs to transaction")
    cli = run_cli(scene.runtime.settings, "audit", "verify")  # the operator's command, once
    assert cli.returncode == 2, cli.stderr
    assert f"approved withdrawal {payout['id']} already belongs to transaction" in cli.stdout
    scene.run()
    assert scene.status(payout["id"]) == "failed"
    scene.assert_integrity_failure_audited()
    scene.assert_no_money_lost()
    scene.assert_frozen()


def test_a_confirmed_payout_flipped_back_with_its_transaction_link_deleted(scene: Scene) -> None:
    """The attacker also clears the payout's link to its transaction. Its authorisation tag
    still verifies (it covers what is paid, not whether it was) and the database keeps no
    other cheap record of it: the audit log does (``audit verify`` names it), but only the
    signer's ledger of withdrawal ids it signed refuses it at use."""
    payout = scene.pay_honestly("confirmed-unlinked")
    scene.sql(
        "UPDATE withdrawals SET status = 'approved', transaction_id = NULL WHERE id = :id",
        id=payout["id"],
    )
    scene.assert_verify_names(f"withdrawal {payout['id']} is approved but audit event")
    scene.run()
    scene.assert_no_money_lost()  # the signer refuses: it signed that withdrawal id before


# --- the policy and the allowlist ------------------------------------------------------------


def test_an_edited_active_policy_refuses_every_payout_and_freezes(scene: Scene) -> None:
    loose = default_document(max_per_payout_sat=2_100_000_000_000_000, approval_tiers=[])
    loose["velocity"] = []
    version = scene.scalar("SELECT version FROM policy_versions WHERE status = 'active'")
    # The attacker even recomputes the document's hash (it is public): the tag still fails.
    scene.sql(
        "UPDATE policy_versions SET document = :doc, sha256 = :sha WHERE status = 'active'",
        doc=json.dumps(loose),
        sha=policy_hash(parse_policy(loose)),
    )
    to_thief = [ApprovedPayout("w-loose", THIEF_SCRIPT, 300_000_000)]
    _the_signer_refuses_itself(scene, to_thief, "max_per_payout")
    scene.assert_verify_names(f"policy version {version} fails its integrity tag")
    refused = scene.client.post(
        "/v1/withdrawals",
        json={"wallet": WALLET, "destination": THIEF, "amount_sat": 300_000_000},
        headers=auth(scene.tokens.all, "loose-policy"),
    )
    _refused_as_integrity_failure(refused)
    scene.run()
    scene.assert_integrity_failure_audited()
    scene.assert_no_money_lost()
    scene.assert_frozen()


def test_an_allowlist_entry_inserted_in_sql_is_refused(scene: Scene) -> None:
    strict = default_document(
        allowlist={**default_document()["allowlist"], "required": True, "on_missing": "deny"}
    )
    install(scene.runtime, strict)
    install_policy_in_signer(scene.runtime.settings, parse_policy(strict))  # its operator
    denied = scene.client.post(
        "/v1/withdrawals",
        json={"wallet": WALLET, "destination": THIEF, "amount_sat": SMALL},
        headers=auth(scene.tokens.all, "not-listed"),
    )
    assert denied.status_code == 422, denied.text  # the policy: not on the list
    long_ago = datetime.now(UTC) - timedelta(days=30)  # past any cooling-off and ramp
    with scene.runtime.db.read() as uow:
        wallet_id = get_wallet(uow, WALLET).id
    scene.sql(
        "INSERT INTO allowlist_entries (id, wallet_id, address, source, status, proposed_by,"
        " created_at, active_since, mac) VALUES ('00000000-0000-4000-8000-00000000a11e',"
        " :wallet, :address, 'treasury', 'active', 'staff:alice', :at, :at, :mac)",
        wallet=wallet_id,
        address=THIEF,
        at=long_ago,
        mac="0" * 64,
    )
    to_thief = [ApprovedPayout("w-listed", THIEF_SCRIPT, SMALL)]
    _the_signer_refuses_itself(scene, to_thief, "not on the allowlist")
    scene.assert_verify_names("allowlist entry 00000000-0000-4000-8000-00000000a11e fails")
    refused = scene.client.post(
        "/v1/withdrawals",
        json={"wallet": WALLET, "destination": THIEF, "amount_sat": SMALL},
        headers=auth(scene.tokens.all, "listed-in-sql"),
    )
    _refused_as_integrity_failure(refused)
    scene.run()
    scene.assert_integrity_failure_audited()
    scene.assert_no_money_lost()
    scene.assert_frozen()


# --- the cold destination --------------------------------------------------------------------


def test_a_swapped_cold_destination_is_never_swept_to(scene: Scene) -> None:
    from embit import script
    from embit.networks import NETWORKS

    from tests.treasury.test_sweeps import cold_account, with_cold

    with_cold(scene.runtime)  # the hot balance is far above the ceiling: sweeps are due
    theirs = cold_account().derive([7]).to_base58(NETWORKS["regtest"]["xpub"])
    cold_id = scene.scalar("SELECT id FROM cold_destinations WHERE status = 'active'")
    scene.sql(
        "UPDATE cold_destinations SET descriptor = :descriptor WHERE id = :id",
        descriptor=f"wpkh({theirs}/0/*)",
        id=cold_id,
    )
    their_script = script.p2wpkh(cold_account().derive([7, 0, 0]).key).data
    _the_signer_refuses_itself(scene, their_script, "not an address of the signer's cold")
    scene.assert_verify_names(f"cold destination {cold_id} fails its integrity tag")
    scene.run()  # the sweep is due on every pass and refused on every pass
    assert scene.scalar("SELECT count(*) FROM sweeps") == 0
    scene.assert_no_money_lost()
    scene.assert_frozen()


# --- credentials: tokens and staff -----------------------------------------------------------


def test_an_api_token_inserted_in_sql_authenticates_nothing(scene: Scene) -> None:
    secret = "wsvc_" + "minted-in-sql-" * 4
    scene.sql(
        "INSERT INTO api_tokens (id, name, token_hash, scopes, created_at, mac)"
        " VALUES ('00000000-0000-4000-8000-0000000070c3', 'payout-engine', :hash, :scopes,"
        " :now, :mac)",
        hash=hash_token(secret),
        scopes=json.dumps(sorted(SCOPES)),
        now=datetime.now(UTC),
        mac="0" * 64,
    )
    scene.assert_verify_names("API token 00000000-0000-4000-8000-0000000070c3 fails")
    refused = scene.client.post(
        "/v1/withdrawals",
        json={"wallet": WALLET, "destination": THIEF, "amount_sat": SMALL},
        headers=auth(secret, "minted"),
    )
    assert refused.status_code == 401, refused.text
    scene.run()
    scene.assert_integrity_failure_audited()
    scene.assert_no_money_lost()
    scene.assert_frozen()


@pytest.mark.parametrize(
    ("name", "edit"),
    [
        ("otto", "UPDATE staff SET role = 'approver' WHERE username = 'otto'"),
        ("eve", "UPDATE staff SET groups = :groups WHERE username = 'eve'"),
    ],
)
def test_a_staff_member_promoted_in_sql_cannot_approve(scene: Scene, name: str, edit: str) -> None:
    payout, digest = _pending_big(scene, f"promoted-{name}")
    headers = scene.login(name)  # before the edit: a session as they were
    scene.sql(edit, groups=json.dumps(["ops", "treasury"]))
    staff_id = scene.team.members[name].staff_id
    scene.assert_verify_names(f"staff member {staff_id} fails its integrity tag")
    refused = scene.decide(name, headers, payout["approval_request_id"], digest)
    _refused_as_integrity_failure(refused)  # their session no longer authenticates
    assert scene.status(payout["id"]) == "pending_approval"
    scene.run()
    scene.assert_integrity_failure_audited()
    scene.assert_no_money_lost()
    scene.assert_frozen()


def test_a_cleared_totp_lockout_is_refused(scene: Scene) -> None:
    payout, digest = _pending_big(scene, "lockout")
    alice = scene.team.members["alice"]
    headers = scene.login("alice")
    right = alice.live_code()
    wrong = "000000" if right != "000000" else "111111"
    statuses = [
        scene.decide("alice", headers, payout["approval_request_id"], digest, wrong).status_code
        for _ in range(5)
    ]
    assert statuses == [403, 403, 403, 403, 429]
    # The attacker lifts the lock to keep guessing (or to use a stolen code now).
    scene.sql(
        "UPDATE staff SET locked_until = NULL, failed_attempts = 0 WHERE id = :id",
        id=alice.staff_id,
    )
    scene.assert_verify_names(f"staff member {alice.staff_id} is locked until")
    refused = scene.decide("alice", headers, payout["approval_request_id"], digest, right)
    _refused_as_integrity_failure(refused)
    with scene.runtime.db.read() as uow:
        assert not uow.approval_decisions.has_decided(
            uow.approval_requests.get(payout["approval_request_id"]), alice.staff_id
        )
    scene.run()
    scene.assert_no_money_lost()
    scene.assert_frozen()


# --- the audit log ---------------------------------------------------------------------------


def _events(scene: Scene) -> list[int]:
    with scene.runtime.db.engine.connect() as conn:
        return list(conn.execute(text("SELECT seq FROM audit_events ORDER BY seq")).scalars())


@pytest.mark.parametrize("tamper", ["edit", "delete"])
def test_audit_events_edited_or_deleted_are_named_by_verify(scene: Scene, tamper: str) -> None:
    """No use path reads the whole chain (every write would cost a walk of it): an edit or
    a deletion inside the chain is found by ``audit verify``; the payouts it describes are
    unaffected and nothing is paid because of it."""
    scene.pay_honestly("audited")
    seqs = _events(scene)
    target = seqs[len(seqs) // 2]
    if tamper == "edit":
        scene.sql("UPDATE audit_events SET actor = 'staff:nobody' WHERE seq = :seq", seq=target)
        expected = f"audit event {target} was altered"
    else:
        scene.sql("DELETE FROM audit_events WHERE seq = :seq", seq=target)
        expected = f"audit event {target} is missing"
    scene.assert_verify_names(expected)
    scene.run()
    scene.assert_verify_names(expected)
    scene.assert_no_money_lost()


def test_a_deleted_tail_is_caught_at_the_next_write(scene: Scene) -> None:
    """The head still names the last event, which is gone: the next write records that in
    the chain (and the risk monitor freezes on it) before it appends."""
    scene.pay_honestly("tail")
    cut = _events(scene)[-3]
    scene.sql("DELETE FROM audit_events WHERE seq >= :seq", seq=cut)
    scene.assert_verify_names("the audit head does not match the last event")
    scene.payout("after-the-cut", SMALL)
    scene.assert_integrity_failure_audited()
    scene.run()
    scene.assert_verify_names(f"audit event {cut} is missing")
    scene.assert_no_money_lost()  # the payout requested after the cut is held by the freeze
    scene.assert_frozen()


def test_a_truncated_tail_with_a_rewritten_head_is_caught_at_the_next_write(scene: Scene) -> None:
    scene.pay_honestly("truncated")
    seqs = _events(scene)
    cut = seqs[-5]
    scene.sql("DELETE FROM audit_events WHERE seq >= :seq", seq=cut)
    kept = scene.scalar("SELECT hash FROM audit_events WHERE seq = :seq", seq=cut - 1)
    scene.sql(
        "UPDATE audit_head SET last_seq = :seq, last_hash = :hash WHERE id = 1",
        seq=cut - 1,
        hash=kept,
    )
    scene.assert_verify_names("the audit head fails its integrity tag")
    # The next write re-tags the head; it records the broken head in the chain first.
    scene.payout("after-truncation", SMALL)
    scene.assert_verify_names("the audit head fails its integrity tag", f"at seq {cut - 1}")
    scene.run()
    scene.assert_integrity_failure_audited()
    scene.assert_no_money_lost()  # the payout requested after the cut is held by the freeze
    scene.assert_frozen()


def test_a_truncated_tail_with_a_replayed_head_is_detected(scene: Scene) -> None:
    """The attacker saved an earlier head row (with its valid tag), deletes every event after
    it and restores that row: the database holds a shorter chain that verifies. Only an
    anchor outside the database (the signer's record of the head it has seen) shows it."""
    scene.payout("before", SMALL)
    saved = (
        scene.scalar("SELECT last_seq FROM audit_head WHERE id = 1"),
        scene.scalar("SELECT last_hash FROM audit_head WHERE id = 1"),
        scene.scalar("SELECT mac FROM audit_head WHERE id = 1"),
    )
    scene.payout("erased", SMALL)
    scene.runtime.anchor_audit()  # the worker's pass hands the signer the head, as every pass
    scene.sql("DELETE FROM audit_events WHERE seq > :seq", seq=saved[0])
    scene.sql(
        "UPDATE audit_head SET last_seq = :seq, last_hash = :hash, mac = :mac WHERE id = 1",
        seq=saved[0],
        hash=saved[1],
        mac=saved[2],
    )
    assert not verify_audit(scene.runtime).ok  # the chain verifies; the signer's anchor not
    scene.run()  # the next pass: the signer refuses the shorter head


# --- the database writer who also holds the KEK (root on the API host) ----------------------
# Every tag above can then be forged; what stays out of reach is the signer's own evidence:
# it signs a payout above a tier only on decisions it recorded itself, each after checking
# the approver's TOTP code, on the digest of the exact content it is asked to pay.


def _retag_authorization(scene: Scene, withdrawal_id: str) -> None:
    from walletsvc.db.tags import withdrawal_authorization_message

    with scene.runtime.db.read() as uow:
        row = uow.withdrawals.get(withdrawal_id)
        assert row is not None
        mac = scene.runtime.tags.tag(withdrawal_authorization_message(row))
    scene.sql("UPDATE withdrawals SET authorization_mac = :mac WHERE id = :id", mac=mac, id=row.id)


def _the_signer_refused(scene: Scene, withdrawal_id: str) -> None:
    """The refusal came from the signer's count of its own evidence (the risk monitor
    recorded it with the signer's message)."""
    from sqlalchemy import select

    from walletsvc.db.models import AuditEvent

    with scene.runtime.db.read() as uow:
        events = uow.session.scalars(select(AuditEvent.data)).all()
    text = json.dumps(list(events), default=str)
    assert f"withdrawal {withdrawal_id} needs 2 approvals" in text, text[-2000:]


def test_with_the_kek_a_payout_above_a_tier_approved_in_sql_pays_nothing(scene: Scene) -> None:
    payout, _digest = _pending_big(scene, "kek-fake-approval")
    scene.sql("UPDATE withdrawals SET status = 'approved' WHERE id = :id", id=payout["id"])
    scene.sql(
        "UPDATE approval_requests SET status = 'approved' WHERE id = :id",
        id=payout["approval_request_id"],
    )
    _retag_authorization(scene, payout["id"])  # the service's own check passes now
    scene.run()
    assert scene.status(payout["id"]) != "confirmed"
    assert scene.runtime.signer.status()["signed_transactions"] == 0
    _the_signer_refused(scene, payout["id"])
    scene.assert_no_money_lost()
    scene.assert_frozen()  # the signer refusing its own work freezes the wallet


def test_with_the_kek_an_approved_payout_rewritten_after_its_approvals_pays_nothing(
    scene: Scene,
) -> None:
    payout, digest = _pending_big(scene, "kek-rewrite")
    for name in ("alice", "bob"):  # real approvals, recorded in the signer
        decided = scene.decide(name, scene.login(name), payout["approval_request_id"], digest)
        assert decided.status_code == 200, decided.text
    assert scene.status(payout["id"]) == "approved"
    scene.sql(
        "UPDATE withdrawals SET amount_sat = 40000000, destination = :address,"
        " script_pubkey = :script WHERE id = :id",
        address=THIEF,
        script=THIEF_SCRIPT.hex(),
        id=payout["id"],
    )
    _retag_authorization(scene, payout["id"])
    scene.run()
    assert scene.status(payout["id"]) != "confirmed"
    _the_signer_refused(scene, payout["id"])  # the rewritten content: a digest nobody decided
    scene.assert_no_money_lost()
    scene.assert_frozen()


def test_an_honest_payout_above_a_tier_is_paid_on_the_signers_evidence(scene: Scene) -> None:
    payout, digest = _pending_big(scene, "honest-big")
    for name in ("alice", "carol"):
        decided = scene.decide(name, scene.login(name), payout["approval_request_id"], digest)
        assert decided.status_code == 200, decided.text
    scene.allowed[(MINER_SCRIPT.hex(), BIG)] += 1
    scene.run()
    assert scene.status(payout["id"]) == "confirmed"
    scene.assert_no_money_lost()
