"""Changing a wallet's cold destination is governed: a request, the policy's
``cold_destination_change`` quorum (2 of treasury, TOTP step-up) through the one approval
mechanism, then the switch; every step audited. Until then sweeps keep paying the old one."""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import pyotp
import pytest
from embit import bip32, script
from embit.networks import NETWORKS
from fastapi.testclient import TestClient

from tests.conftest import WALLET, Tokens, auth, fund_wallet
from tests.governance_helpers import shown_digest
from tests.helpers import audit_events, verify_audit
from tests.signer_helpers import install_cold_in_signer
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models_governance import ApprovalRequest
from walletsvc.governance import approvals
from walletsvc.governance.staff import TOTP_PERIOD_S, StaffPrincipal, create_staff, time_step
from walletsvc.treasury.cold import (
    get_change,
    request_cold_destination_change,
    set_initial_cold_destination,
)

REGTEST = NETWORKS["regtest"]
PASSWORD = "correct horse battery staple"


def tpub(tag: str) -> bip32.HDKey:
    root = bip32.HDKey.from_seed(hashlib.sha256(tag.encode()).digest(), version=REGTEST["xprv"])
    return root.derive("m/84h/1h/0h").to_public()


def staff(runtime: Runtime, name: str, role: str) -> tuple[StaffPrincipal, str]:
    created = create_staff(
        runtime.db,
        runtime.tags,
        runtime.signer,
        username=name,
        password=PASSWORD,
        role=role,
        groups=["treasury"],
        actor="test",
    )
    principal = StaffPrincipal(created.staff_id, name, role, frozenset({"treasury"}))
    return principal, created.totp_secret


def approve(
    runtime: Runtime,
    request_id: str,
    who: tuple[StaffPrincipal, str],
    now: datetime,
    decision: str = "approve",
) -> str:
    principal, secret = who
    return approvals.decide(
        runtime.db,
        runtime.tags,
        runtime.signer,
        runtime.settings,
        request_id=request_id,
        staff=principal,
        decision=decision,
        digest=shown_digest(runtime, request_id),
        totp=pyotp.TOTP(secret).at(now),
        comment="checked the fingerprint on both devices",
        now=now,
    )


@pytest.fixture
def now() -> datetime:
    # The start of a TOTP step a little ahead: injected codes never collide with real ones.
    return datetime.fromtimestamp((time_step(datetime.now(UTC)) + 10) * TOTP_PERIOD_S, UTC)


def test_change_needs_the_quorum_and_then_sweeps_use_the_new_destination(
    client: TestClient, runtime: Runtime, tokens: Tokens, now: datetime
) -> None:
    old_key, new_key = tpub("cold A"), tpub("cold B")
    old = set_initial_cold_destination(
        runtime.db,
        runtime.tags,
        wallet=WALLET,
        text=old_key.to_base58(REGTEST["xpub"]),
        actor="test",
    )
    install_cold_in_signer(runtime.settings, WALLET, old_key.to_base58(REGTEST["xpub"]))
    operator = staff(runtime, "olga", "operator")
    bob, carol = staff(runtime, "bob", "approver"), staff(runtime, "carol", "approver")

    # Machine tokens cannot propose a cold destination.
    refused = client.post(
        f"/v1/wallets/{WALLET}/cold-destination",
        headers=auth(tokens.all),
        json={"descriptor": new_key.to_base58(REGTEST["xpub"])},
    )
    assert refused.status_code == 403

    change = request_cold_destination_change(
        runtime.db,
        runtime.tags,
        wallet=WALLET,
        text=new_key.to_base58(REGTEST["zpub"]),  # vpub form: normalised to the same key
        reason="new hardware wallets",
        requester=operator[0].actor,
        requester_staff_id=operator[0].staff_id,
        now=now,
    )
    assert change.status == "pending_approval" and change.approval_request_id
    shown = client.get(f"/v1/wallets/{WALLET}/cold-destination", headers=auth(tokens.all)).json()
    assert shown["current"]["fingerprint"] == old.fingerprint
    assert [(c["status"], c["fingerprint"]) for c in shown["changes"]] == [
        ("pending_approval", change.fingerprint)
    ]
    with runtime.db.read() as uow:
        s = uow.session
        request = s.get(ApprovalRequest, change.approval_request_id)
        assert request is not None
        assert (request.kind, request.required_group, request.m) == (
            "cold_destination_change",
            "treasury",
            2,
        )
        assert request.content["fingerprint"] == change.fingerprint
        assert request.content["replaces_fingerprint"] == old.fingerprint

    # One approval is not a quorum: sweeps still pay the old destination.
    assert approve(runtime, change.approval_request_id, bob, now) == "pending"
    fund_wallet(runtime)
    runtime.tick()
    first = client.get("/v1/sweeps", headers=auth(tokens.all)).json()["sweeps"]
    assert [s["address"] for s in first] == [
        script.p2wpkh(old_key.derive([0, 0]).key).address(REGTEST)
    ]

    assert approve(runtime, change.approval_request_id, carol, now) == "approved"
    with runtime.db.read() as uow:
        s = uow.session
        assert get_change(uow, change.id).status == "applied"
    view = client.get(f"/v1/wallets/{WALLET}", headers=auth(tokens.all)).json()
    assert view["cold_destination"]["fingerprint"] == change.fingerprint != old.fingerprint
    assert view["cold_destination"]["next_index"] == 0  # a fresh destination starts at 0
    # The signer keeps its own copy: its operator installs the approved one on the signer
    # host (it does not yet take a cold change over the socket, with or without a quorum).
    install_cold_in_signer(runtime.settings, WALLET, new_key.to_base58(REGTEST["xpub"]))

    runtime.chain.mine(1)  # type: ignore[attr-defined]  (confirms the first sweep)
    runtime.tick()
    latest = client.get("/v1/sweeps", headers=auth(tokens.all)).json()["sweeps"][0]
    assert latest["address"] == script.p2wpkh(new_key.derive([0, 0]).key).address(REGTEST)

    sets = audit_events(runtime.db, "cold_destination.set")
    assert [e.data["fingerprint"] for e in sets] == [old.fingerprint, change.fingerprint]
    assert sets[1].data["previous_fingerprint"] == old.fingerprint
    assert len(audit_events(runtime.db, "cold_destination.change_requested")) == 1
    assert verify_audit(runtime).ok


def test_rejected_change_leaves_the_destination_alone(runtime: Runtime, now: datetime) -> None:
    old = set_initial_cold_destination(
        runtime.db,
        runtime.tags,
        wallet=WALLET,
        text=tpub("cold A").to_base58(REGTEST["xpub"]),
        actor="test",
    )
    operator = staff(runtime, "olga", "operator")
    bob = staff(runtime, "bob", "approver")
    change = request_cold_destination_change(
        runtime.db,
        runtime.tags,
        wallet=WALLET,
        text=tpub("attacker").to_base58(REGTEST["xpub"]),
        reason=None,
        requester=operator[0].actor,
        requester_staff_id=operator[0].staff_id,
        now=now,
    )
    assert approve(runtime, change.approval_request_id or "", bob, now, "reject") == "rejected"
    with runtime.db.read() as uow:
        assert get_change(uow, change.id).status == "rejected"
    from walletsvc.treasury.cold import cold_view
    from walletsvc.wallets.service import get_wallet

    with runtime.db.read() as uow:
        current = cold_view(uow, get_wallet(uow, WALLET))
    assert current is not None and current["fingerprint"] == old.fingerprint
    assert len(audit_events(runtime.db, "cold_destination.change_rejected")) == 1
