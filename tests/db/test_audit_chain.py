"""The audit log and the integrity tags: every state change leaves its event, the hash chain
verifies, and edits made directly in the database (SQL, bypassing the service) are caught —
by `audit verify`, and by the payout worker, which refuses to sign an altered payout."""

from __future__ import annotations

import itertools
import os
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from embit.networks import NETWORKS
from fastapi.testclient import TestClient
from sqlalchemy import delete, func, insert, select, update
from sqlalchemy.orm import Session

from tests.conftest import WALLET, Tokens, auth
from tests.helpers import (
    audit_events,
    count_rows,
    dev_chain,
    embedded,
    external_destination,
    request_payout,
    show_withdrawal,
    verify_audit,
)
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import (
    ApiToken,
    AuditEvent,
    AuditHead,
    ChainTransaction,
    PolicyVersion,
    Withdrawal,
)
from walletsvc.db.models_governance import (
    AllowlistEntryRow,
    ApprovalDecision,
    ApprovalRequest,
    PolicyProposal,
    Staff,
)
from walletsvc.db.models_staff_auth import StaffChange, StaffPasskey
from walletsvc.db.models_treasury import ColdDestinationRow, Refill
from walletsvc.db.tags import GOVERNED_ROW_KINDS
from walletsvc.governance.tokens import SCOPES, create_token, hash_token, revoke_token
from walletsvc.keys.integrity import HmacRowTagger

DEST, DEST_SCRIPT = external_destination("audited miner")
THIEF, THIEF_SCRIPT = external_destination("thief")
FORGED_ID = "00000000-0000-4000-8000-000000000001"


def _events_for(runtime: Runtime, subject_id: str) -> list[str]:
    return [e.action for e in audit_events(runtime.db) if e.subject_id == subject_id]


def _sql(runtime: Runtime, statement: Any) -> None:
    """A direct edit, as an intruder with database access would make it (no audit, no lock)."""
    with runtime.db.engine.begin() as conn:
        conn.execute(statement)


def test_every_state_change_is_audited_and_the_chain_verifies(
    client: TestClient, funded: Runtime, tokens: Tokens
) -> None:
    chain = dev_chain(funded)
    actions = [e.action for e in audit_events(funded.db)]
    assert actions[0] == "policy.activated"
    for action in ("wallet.created", "address.issued", "token.created", "deposit.seen"):
        assert action in actions, action

    issued = client.post(
        f"/v1/wallets/{WALLET}/deposit-addresses", headers=auth(tokens.all), json={"label": "b"}
    )
    assert issued.status_code == 201
    last = audit_events(funded.db)[-1]
    assert (last.action, last.data["address"]) == ("address.issued", issued.json()["address"])

    created = request_payout(client, tokens.all, key="audit-1", destination=DEST)
    withdrawal_id = created.json()["id"]
    assert _events_for(funded, withdrawal_id) == ["withdrawal.requested"]
    requested = audit_events(funded.db, "withdrawal.requested")[-1]
    assert requested.actor == "token:engine"
    assert requested.data["amount_sat"] == created.json()["amount_sat"]
    assert requested.data["decision"] == created.json()["decision"]

    funded.tick()
    chain.mine(1)
    funded.tick()
    view = show_withdrawal(client, tokens.all, withdrawal_id)
    assert view["status"] == "confirmed"
    with funded.db.read() as uow:
        session = uow.session
        tx_id = session.scalars(select(ChainTransaction.id)).one()
    assert _events_for(funded, tx_id) == [
        "transaction.signed",
        "transaction.broadcast",
        "transaction.confirmed",
    ]
    signed = audit_events(funded.db, "transaction.signed")[-1]
    assert signed.data["txid"] == view["txid"]
    assert signed.data["withdrawals"] == [withdrawal_id]
    assert signed.data["fee_sat"] == view["transaction_fee_sat"]
    confirmed = audit_events(funded.db, "transaction.confirmed")[-1]
    assert confirmed.data["withdrawals"] == [withdrawal_id]

    # The chain is gap-free and every event links to its predecessor.
    events = audit_events(funded.db)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert all(b.prev_hash == a.hash for a, b in itertools.pairwise(events))
    report = verify_audit(funded)
    assert report.ok, report.problems
    assert report.events_checked == len(events)


@pytest.mark.parametrize(
    "tamper", ["edit data", "edit actor", "delete middle", "delete last", "truncate"]
)
def test_tampering_with_the_audit_log_is_detected(
    client: TestClient, runtime: Runtime, tokens: Tokens, tamper: str
) -> None:
    request_payout(client, tokens.all, key="t-1", destination=DEST)
    request_payout(client, tokens.all, key="t-2", destination=DEST, amount_sat=200_000)
    assert verify_audit(runtime).ok
    requested = audit_events(runtime.db, "withdrawal.requested")
    target = requested[0]
    if tamper == "edit data":
        doctored = {**target.data, "amount_sat": 1}
        _sql(runtime, update(AuditEvent).where(AuditEvent.seq == target.seq).values(data=doctored))
    elif tamper == "edit actor":
        _sql(
            runtime,
            update(AuditEvent).where(AuditEvent.seq == target.seq).values(actor="token:someone"),
        )
    elif tamper == "delete middle":
        _sql(runtime, delete(AuditEvent).where(AuditEvent.seq == target.seq))
    elif tamper == "delete last":
        with runtime.db.read() as uow:
            session = uow.session
            last = session.scalar(select(func.max(AuditEvent.seq)))
        _sql(runtime, delete(AuditEvent).where(AuditEvent.seq == last))
    else:  # drop the second payout's events and point the head at the new last event
        cut = audit_events(runtime.db, "withdrawal.requested")[1].seq
        _sql(runtime, delete(AuditEvent).where(AuditEvent.seq >= cut))
        kept = audit_events(runtime.db)[-1]
        _sql(
            runtime,
            update(AuditHead)
            .where(AuditHead.id == 1)
            .values(last_seq=kept.seq, last_hash=kept.hash),
        )
    report = verify_audit(runtime)
    assert not report.ok
    expected = {
        "edit data": f"audit event {target.seq} was altered",
        "edit actor": f"audit event {target.seq} was altered",
        "delete middle": f"audit event {target.seq} is missing",
        "delete last": "the audit head does not match the last event (events removed?)",
        "truncate": "the audit head fails its integrity tag"
        " (the last events removed, the head rewritten?)",
    }[tamper]
    assert expected in report.problems, report.problems


def test_editing_an_approved_withdrawal_is_detected_by_verify(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    created = request_payout(client, tokens.all, key="v-1", destination=DEST)
    assert created.json()["status"] == "approved"
    assert verify_audit(runtime).ok
    _sql(
        runtime,
        update(Withdrawal)
        .where(Withdrawal.id == created.json()["id"])
        .values(amount_sat=9_999_999),
    )
    report = verify_audit(runtime)
    assert f"approved withdrawal {created.json()['id']} fails its integrity tag" in (
        report.problems
    )


def test_editing_the_active_policy_is_detected_and_fails_closed(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    with runtime.db.read() as uow:
        session = uow.session
        policy = session.scalars(select(PolicyVersion)).one()
    loosened = {**policy.document, "max_per_payout_sat": 2_100_000_000_000_000}
    _sql(
        runtime,
        update(PolicyVersion).where(PolicyVersion.id == policy.id).values(document=loosened),
    )
    report = verify_audit(runtime)
    assert f"policy version {policy.version} does not match its hash" in report.problems
    before = count_rows(runtime.db)
    response = request_payout(client, tokens.all, key="p-1", destination=DEST)
    # Fail closed: a server-side integrity failure (500 by design), in the contract's shape.
    assert response.status_code == 500, response.text
    assert response.json() == {
        "error": {
            "code": "integrity_failure",
            "message": f"policy version {policy.version} does not match its hash",
            "field": None,
        }
    }
    assert count_rows(runtime.db) == before


EDITS: dict[str, dict[str, Any]] = {
    "amount": {"amount_sat": 40_000_000},
    "script": {"script_pubkey": THIEF_SCRIPT.hex(), "destination": THIEF},
    "mac removed": {"authorization_mac": None},
}


@pytest.mark.kernel  # reads the kernel chain's mempool entries (fees, vsizes)
def test_payouts_altered_after_approval_are_never_signed(
    client: TestClient, funded: Runtime, tokens: Tokens
) -> None:
    """Rows edited in SQL after approval, and one inserted straight into the table (no
    policy decision, no tag), all fail; the untouched payout beside them still goes out."""
    chain = embedded(funded)
    victims: dict[str, str] = {}
    for n, (edit, values) in enumerate(EDITS.items()):
        victim = request_payout(client, tokens.all, key=f"x-{n}", destination=DEST).json()
        assert victim["status"] == "approved"
        _sql(funded, update(Withdrawal).where(Withdrawal.id == victim["id"]).values(**values))
        victims[edit] = victim["id"]
    honest_dest, honest_script = external_destination("honest miner")
    honest = request_payout(client, tokens.all, key="x-honest", destination=honest_dest).json()
    with funded.db.read() as uow:
        session = uow.session
        template = session.get(Withdrawal, honest["id"])
        assert template is not None
        wallet_id, policy_hash = template.wallet_id, template.policy_hash
    with Session(funded.db.engine) as session, session.begin():
        session.add(
            Withdrawal(
                id=FORGED_ID,
                wallet_id=wallet_id,
                destination=THIEF,
                script_pubkey=THIEF_SCRIPT.hex(),
                amount_sat=5_000_000,
                status="approved",
                decision={"outcome": "allow", "rules": [], "required": None},
                policy_hash=policy_hash,
            )
        )
    victims["inserted"] = FORGED_ID

    report = funded.worker.run_once()
    assert len(report.signed_txids) == 1

    for edit, victim_id in victims.items():
        failed = show_withdrawal(client, tokens.all, victim_id)
        assert failed["status"] == "failed", edit
        assert failed["failure_reason"].startswith("integrity check failed"), edit
        assert failed["txid"] is None and failed["raw_tx"] is None
    failures = audit_events(funded.db, "integrity.failure")
    assert sorted(e.subject_id or "" for e in failures) == sorted(victims.values())

    sent = show_withdrawal(client, tokens.all, honest["id"])
    assert sent["status"] == "broadcast"
    mempool = chain.mempool_entries()
    assert [e.txid for e in mempool] == [sent["txid"]]
    raw = mempool[0].raw.hex()
    assert honest_script.hex() in raw
    assert THIEF_SCRIPT.hex() not in raw and DEST_SCRIPT.hex() not in raw
    assert count_rows(funded.db, ChainTransaction) == {"chain_transactions": 1}

    # Further passes never pick them up again.
    assert funded.worker.run_once().signed_txids == []
    assert all(
        show_withdrawal(client, tokens.all, v)["status"] == "failed" for v in victims.values()
    )


# --- Row tags of every governed row kind --------------------------------------------------------

_T0 = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
_T1 = _T0 + timedelta(seconds=1)


def _governed_rows() -> dict[str, tuple[Any, dict[str, Any]]]:
    """One row of each governed kind with every covered field set, and an edit per field."""
    return {
        "policy": (
            PolicyVersion(
                id="p1", wallet_id=None, version=1, status="active", sha256="aa" * 32, mac=""
            ),
            {"wallet_id": "", "version": 2, "status": "superseded", "sha256": "ab" * 32},
        ),
        "withdrawal": (
            Withdrawal(
                id="w1", wallet_id="wal1", script_pubkey="0014" + "11" * 20, amount_sat=50_000
            ),
            {
                "id": "w2",
                "wallet_id": "wal2",
                "script_pubkey": "0014" + "22" * 20,
                "amount_sat": 50_001,
            },
        ),
        "api token": (
            ApiToken(
                id="t1", name="engine", token_hash="ab" * 32, scopes=["read"], revoked_at=None
            ),
            {
                "id": "t2",
                "name": "engine2",
                "token_hash": "ac" * 32,
                "scopes": ["read", "withdrawals:create"],
                "revoked_at": _T0,
            },
        ),
        "staff": (
            Staff(id="s1", username="alice", role="approver", groups=["ops", "treasury"], mac=""),
            {
                "id": "s2",
                "username": "alicf",
                "role": "operator",
                "groups": ["ops,treasury"],  # one group: the old comma-joined message collided
                "disabled_at": _T0,
            },
        ),
        "approval request": (
            ApprovalRequest(
                id="r1",
                kind="withdrawal",
                subject_id="w1",
                required_group="treasury",
                m=2,
                digest="cc" * 32,
                requester="token:engine",
                requester_staff_id=None,
                expires_at=_T0,
                mac="",
            ),
            {
                "id": "r2",
                "kind": "allowlist_add",
                "subject_id": "w2",
                "required_group": "ops",
                "m": 1,
                "digest": "cd" * 32,
                "requester": "staff:alice",
                "requester_staff_id": "",
                "expires_at": _T1,
            },
        ),
        "approval decision": (
            ApprovalDecision(
                request_id="r1",
                staff_id="s1",
                decision="approve",
                digest="cc" * 32,
                totp_step=100,
                mac="",
            ),
            {
                "request_id": "r2",
                "staff_id": "s2",
                "decision": "reject",
                "digest": "cd" * 32,
                "totp_step": 101,
                "passkey_id": "k2",  # a decision made with a passkey names it in its tag
            },
        ),
        "staff passkey": (
            StaffPasskey(
                id="k1",
                staff_id="s1",
                credential_id="Y3JlZA",
                public_key="a2V5",
                disabled_at=None,
                mac="",
            ),
            {
                "id": "k2",
                "staff_id": "s2",
                "credential_id": "Y3JlZQ",
                "public_key": "a2V6",
                "disabled_at": _T0,
            },
        ),
        "staff change": (
            StaffChange(
                id="c1",
                staff_id="s1",
                action="enrol",
                username="dave",
                role="approver",
                groups=["treasury"],
                password_hash="$argon2id$v=19$first",
                status="pending_approval",
                requested_by="staff:olga",
                mac="",
            ),
            {
                "id": "c2",
                "staff_id": "s2",
                "action": "update",
                "username": "erin",
                "role": "operator",
                "groups": ["treasury", "ops"],
                "password_hash": "$argon2id$v=19$writer",  # a writer's own password
            },
        ),
        "allowlist entry": (
            AllowlistEntryRow(
                id="e1",
                wallet_id="wal1",
                address=DEST,
                source="staff",
                status="pending",
                active_since=None,
                mac="",
            ),
            {
                "id": "e2",
                "wallet_id": "wal2",
                "address": THIEF,
                "source": "import",
                "status": "active",
                "active_since": _T0,
            },
        ),
        "cold destination": (
            ColdDestinationRow(
                id="c1",
                wallet_id="wal1",
                kind="wpkh",
                descriptor="wpkh(tpubA/0/*)",
                fingerprint="01020304",
                status="active",
                mac="",
            ),
            {
                "id": "c2",
                "wallet_id": "wal2",
                "kind": "wsh-sortedmulti",
                "descriptor": "wpkh(tpubB/0/*)",
                "fingerprint": "01020305",
                "status": "retired",
            },
        ),
        "refill": (
            Refill(
                id="f1",
                wallet_id="wal1",
                cold_destination_id="c1",
                amount_sat=150_000_000,
                fee_sat=500,
                change_sat=0,
                change_index=None,
                hot_address=DEST,
                hot_script_pubkey="0014" + "11" * 20,
                txid="dd" * 32,
                unsigned_tx="0200",
                requested_by="token:engine",
                mac="",
            ),
            {
                "id": "f2",
                "wallet_id": "wal2",
                "cold_destination_id": "c2",
                "amount_sat": 150_000_001,
                "fee_sat": 501,
                "change_sat": 1,
                "change_index": 0,
                "hot_address": THIEF,
                "hot_script_pubkey": "0014" + "22" * 20,
                "txid": "de" * 32,
                "unsigned_tx": "0201",
                "requested_by": "staff:mallory",
            },
        ),
        "time-locked policy proposal": (
            PolicyProposal(
                id="pp1",
                wallet_id=None,
                sha256="aa" * 32,
                base_sha256="bb" * 32,
                base_version="default/1",
                direction="loosen",
                timelock_s=172_800,
                approval_request_id="r1",
                effective_at=_T1,
                effective_height=288,
                mac="",
            ),
            {
                "id": "pp2",
                "wallet_id": "wal1",
                "sha256": "ab" * 32,
                "base_sha256": "bc" * 32,
                "base_version": "default/2",
                "direction": "tighten",
                "timelock_s": 1,
                "approval_request_id": "r2",
                "effective_at": _T0,
                "effective_height": 1,
            },
        ),
    }


def test_every_governed_row_kind_has_a_message_in_db_tags() -> None:
    kinds = {kind.model for kind in GOVERNED_ROW_KINDS}
    assert kinds == {type(row) for row, _ in _governed_rows().values()}


@pytest.mark.parametrize("name", list(_governed_rows()))
def test_a_row_tag_fails_when_any_covered_field_is_edited(name: str) -> None:
    row, edits = _governed_rows()[name]
    (kind,) = [k for k in GOVERNED_ROW_KINDS if k.model is type(row)]
    tagger = HmacRowTagger(os.urandom(32))
    tag = tagger.tag(kind.message(row))
    assert tagger.verify(kind.message(row), tag)
    for field_name, value in edits.items():
        original = getattr(row, field_name)
        setattr(row, field_name, value)
        assert not tagger.verify(kind.message(row), tag), field_name
        setattr(row, field_name, original)
        assert tagger.verify(kind.message(row), tag), field_name


def _governed_runtime(runtime: Runtime) -> dict[str, str]:
    """A runtime holding at least one tagged row of every governed kind; returns their ids."""
    from tests.governance_helpers import (
        Team,
        aligned_now,
        big_withdrawal,
        decide,
    )
    from tests.treasury.test_sweeps import cold_account
    from walletsvc.governance import approvals
    from walletsvc.governance.allowlist import Proposer, propose_entry
    from walletsvc.treasury.cold import set_initial_cold_destination

    team = Team(runtime)
    alice, bob = team.add("alice"), team.add("bob")
    t0 = aligned_now()
    withdrawal_id = big_withdrawal(runtime, now=t0)
    with runtime.db.read() as uow:
        request = approvals.request_for_subject(uow, "withdrawal", withdrawal_id)
        assert request is not None
    for member in (alice, bob):
        decide(runtime, member, request.id, t0)
    entry_id = propose_entry(
        runtime.db,
        runtime.tags,
        wallet=WALLET,
        address=DEST,
        label="miner",
        proposer=Proposer("staff:alice", alice.staff_id),
        now=t0,
    )
    tpub = cold_account().to_base58(NETWORKS["regtest"]["xpub"])
    cold = set_initial_cold_destination(
        runtime.db, runtime.tags, wallet=WALLET, text=tpub, actor="test"
    )
    with runtime.db.read() as uow:
        session = uow.session
        decision_id = session.scalars(select(ApprovalDecision.id)).first()
        cold_id = session.scalars(select(ColdDestinationRow.id)).one()
        assert cold.fingerprint
    token = create_token(runtime.db, runtime.tags, name="engine", scopes=["read"], actor="test")
    return {
        "token": token.token_id,
        "withdrawal": withdrawal_id,
        "staff": alice.staff_id,
        "request": request.id,
        "decision": str(decision_id),
        "entry": entry_id,
        "cold": cold_id,
    }


def test_audit_verify_checks_every_governed_row_kind(runtime: Runtime) -> None:
    ids = _governed_runtime(runtime)
    report = verify_audit(runtime)
    assert report.ok, report.problems
    with runtime.db.read() as uow:
        policy = uow.session.scalars(select(PolicyVersion)).one()
    edits: list[tuple[Any, str, str, dict[str, Any]]] = [
        (PolicyVersion, policy.id, f"policy version {policy.version}", {"status": "superseded"}),
        (Withdrawal, ids["withdrawal"], f"approved withdrawal {ids['withdrawal']}",
         {"script_pubkey": THIEF_SCRIPT.hex(), "destination": THIEF}),
        (Staff, ids["staff"], f"staff member {ids['staff']}", {"groups": ["treasury", "ops"]}),
        (ApiToken, ids["token"], f"API token {ids['token']}", {"scopes": ["read", "freeze"]}),
        (ApprovalRequest, ids["request"], f"approval request {ids['request']}", {"m": 1}),
        (ApprovalDecision, ids["decision"], f"approval decision {ids['decision']}",
         {"decision": "reject"}),
        (AllowlistEntryRow, ids["entry"], f"allowlist entry {ids['entry']}",
         {"address": THIEF}),
        (ColdDestinationRow, ids["cold"], f"cold destination {ids['cold']}",
         {"fingerprint": "deadbeef"}),
    ]  # fmt: skip
    for model, row_id, label, values in edits:
        with runtime.db.read() as uow:
            row = uow.session.get(model, row_id)
            before = {name: getattr(row, name) for name in values}
        _sql(runtime, update(model).where(model.id == row_id).values(**values))
        report = verify_audit(runtime)
        assert report.problems == [f"{label} fails its integrity tag"], label
        _sql(runtime, update(model).where(model.id == row_id).values(**before))
    assert verify_audit(runtime).ok


@pytest.mark.parametrize("forgery", ["inserted", "widened", "un-revoked"])
def test_a_token_row_forged_in_the_database_is_refused_and_detected(
    client: TestClient, runtime: Runtime, forgery: str
) -> None:
    """A database writer mints themselves an API token (or widens or revives one): its row
    fails its tag, so it authenticates nothing (401, audited) and audit verify names it."""
    secret = "wsvc_" + "forged" * 8
    if forgery == "inserted":
        token_id = FORGED_ID
        _sql(
            runtime,
            insert(ApiToken).values(
                id=token_id,
                name="payout-engine",
                token_hash=hash_token(secret),
                scopes=sorted(SCOPES),
                created_at=datetime.now(UTC),
                mac="0" * 64,
            ),
        )
    else:
        created = create_token(runtime.db, runtime.tags, name="r", scopes=["read"], actor="t")
        token_id, secret = created.token_id, created.secret
        if forgery == "un-revoked":
            revoke_token(runtime.db, runtime.tags, token_id=token_id, actor="t")
            values: dict[str, Any] = {"revoked_at": None}
        else:
            values = {"scopes": sorted(SCOPES)}
        _sql(runtime, update(ApiToken).where(ApiToken.id == token_id).values(**values))
    refused = client.get("/v1/withdrawals", headers=auth(secret))
    assert refused.status_code == 401
    assert refused.json()["error"]["code"] == "unauthenticated"
    failures = audit_events(runtime.db, "integrity.failure")
    assert [e.subject_id for e in failures] == [token_id]
    assert f"API token {token_id} fails its integrity tag" in verify_audit(runtime).problems


def test_an_approved_payout_showing_another_address_is_detected(runtime: Runtime) -> None:
    """The tag covers the script paid, not the address text people read: audit verify checks
    that the text is the script's address (a swapped text would mislead reviewers)."""
    ids = _governed_runtime(runtime)
    assert verify_audit(runtime).ok
    _sql(
        runtime,
        update(Withdrawal).where(Withdrawal.id == ids["withdrawal"]).values(destination=THIEF),
    )
    assert verify_audit(runtime).problems == [
        f"approved withdrawal {ids['withdrawal']} shows an address that is not its script's"
    ]
