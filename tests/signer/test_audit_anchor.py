"""The signer anchors the audit head at every signature and every pass; `audit verify` checks
the chain against every anchor it recorded.

The attacker here holds the database *and* the audit key (root on the API host: the key
comes from the KEK), so every rewrite is re-chained and re-headed consistently: the chain by
itself verifies. Only the signer's anchors, outside their reach, can tell.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, select, update

from tests.conftest import WALLET, fund_wallet
from tests.helpers import external_destination, run_cli, verify_audit
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.database import GENESIS_HASH, audit_digest, audit_fields, audit_head_tag
from walletsvc.db.models import AuditEvent, Withdrawal
from walletsvc.domain.errors import InvalidInput
from walletsvc.governance.audit import verify
from walletsvc.governance.tokens import create_token
from walletsvc.payouts.intake import WithdrawalInput, request_withdrawal
from walletsvc.wallets.freezes import active_freezes


def some_events(runtime: Runtime, n: int, prefix: str = "t") -> None:
    for i in range(n):
        create_token(runtime.db, runtime.tags, name=f"{prefix}{i}", scopes=["read"], actor="test")


def last_anchor(runtime: Runtime) -> int:
    return runtime.signer.audit_anchors()[-1][0]


def rechain(runtime: Runtime, start: int) -> None:
    """The attacker with the audit key: re-link and re-hash every event from ``start`` on and
    point a freshly tagged head at the last one."""
    key = runtime.db.audit_key
    with runtime.db.write() as uow:
        session = uow.session
        before = session.get(AuditEvent, start - 1) if start > 1 else None
        prev = before.hash if before is not None else GENESIS_HASH
        events = session.scalars(
            select(AuditEvent).where(AuditEvent.seq >= start).order_by(AuditEvent.seq)
        ).all()
        for ev in events:
            ev.prev_hash = prev
            ev.hash = prev = audit_digest(key, prev, audit_fields(ev))
        session.flush()
        last = session.scalars(select(AuditEvent).order_by(AuditEvent.seq.desc())).first()
        head = uow.audit_events.head()
        assert head is not None and last is not None
        head.last_seq, head.last_hash = last.seq, last.hash
        head.mac = audit_head_tag(key, last.seq, last.hash)


def edit_event(runtime: Runtime, seq: int) -> None:
    with runtime.db.write() as uow:
        ev = uow.session.get(AuditEvent, seq)
        assert ev is not None
        ev.actor = "someone-else"
    rechain(runtime, seq)


def delete_event(runtime: Runtime, seq: int) -> None:
    """Delete one event and renumber the rest, so the chain has no gap."""
    with runtime.db.write() as uow:
        session = uow.session
        session.execute(delete(AuditEvent).where(AuditEvent.seq == seq))
        later = session.scalars(
            select(AuditEvent.seq).where(AuditEvent.seq > seq).order_by(AuditEvent.seq)
        ).all()
        for old in later:  # one at a time, upwards: the primary key never collides
            session.execute(update(AuditEvent).where(AuditEvent.seq == old).values(seq=old - 1))
    rechain(runtime, seq)


def truncate_after(runtime: Runtime, seq: int) -> None:
    with runtime.db.write() as uow:
        uow.session.execute(delete(AuditEvent).where(AuditEvent.seq > seq))
    rechain(runtime, seq)


def chain_alone_ok(runtime: Runtime) -> bool:
    with runtime.db.read() as uow:
        return verify(uow, runtime.tags, runtime.db.audit_key).ok


def sign_a_payout(runtime: Runtime, n: int) -> str:
    """A small payout requested and signed by the worker (no pass, so no pass anchor)."""
    result = request_withdrawal(
        runtime.db,
        runtime.tags,
        body=WithdrawalInput(WALLET, external_destination(f"anchor {n}")[0], 100_000, f"r{n}"),
        idempotency_key=f"anchor-{n}",
        token_id="t1",
        actor="token:t1",
    )
    runtime.worker.run_once()
    return result.withdrawal_id


def transaction_of(runtime: Runtime, withdrawal_id: str) -> str | None:
    with runtime.db.read() as uow:
        row = uow.session.get(Withdrawal, withdrawal_id)
        assert row is not None
        return row.transaction_id


# -- every signature anchors ------------------------------------------------------------


def test_a_signature_anchors_the_head_it_was_signed_under(runtime: Runtime) -> None:
    fund_wallet(runtime)
    some_events(runtime, 3)
    with runtime.db.read() as uow:
        head = uow.audit_events.head()
        assert head is not None
    assert runtime.signer.audit_anchors() == []  # no pass has run

    withdrawal_id = sign_a_payout(runtime, 1)
    assert transaction_of(runtime, withdrawal_id) is not None
    anchored = runtime.signer.audit_anchors()
    assert anchored and anchored[-1][0] > head.last_seq  # the head inside the signing write

    edit_event(runtime, 2)  # an event well before the signature, re-chained with the key
    assert chain_alone_ok(runtime)
    report = verify_audit(runtime)
    assert f"audit event {anchored[-1][0]} is not the one the signer anchored" in " ".join(
        report.problems
    )


def test_a_head_gone_back_refuses_the_signature_and_freezes(runtime: Runtime) -> None:
    fund_wallet(runtime)
    some_events(runtime, 6)
    runtime.anchor_audit()
    anchored = last_anchor(runtime)
    truncate_after(runtime, anchored - 5)  # the log cut short below the anchor
    withdrawal_id = sign_a_payout(runtime, 2)  # its own events do not reach the anchor again
    assert transaction_of(runtime, withdrawal_id) is None
    with runtime.db.read() as uow:
        assert active_freezes(uow)  # the signer's refusal froze the wallet
    assert not verify_audit(runtime).ok


# -- `audit verify`: deletion, truncation, edits, anywhere below an anchor ----------------


def test_a_truncated_and_reheaded_log_fails_against_the_signers_anchor(runtime: Runtime) -> None:
    some_events(runtime, 3)
    runtime.tick()  # the pass anchors the head in the signer
    seq = last_anchor(runtime)
    truncate_after(runtime, seq - 2)

    with runtime.db.read() as uow:
        anchored = verify(
            uow, runtime.tags, runtime.db.audit_key, anchors=runtime.signer.audit_anchors()
        )
    assert chain_alone_ok(runtime)  # the chain by itself cannot tell
    assert not anchored.ok
    assert f"audit event {seq}, which the signer anchored, is gone" in anchored.problems[0]

    result = run_cli(runtime.settings, "audit", "verify")
    assert result.returncode == 2
    assert "which the signer anchored, is gone" in result.stdout


@pytest.mark.parametrize("where", ["first", "middle", "anchored"])
def test_an_edited_event_is_caught(runtime: Runtime, where: str) -> None:
    some_events(runtime, 4)
    runtime.anchor_audit()
    seq = last_anchor(runtime)
    edit_event(runtime, {"first": 1, "middle": seq // 2, "anchored": seq}[where])
    assert chain_alone_ok(runtime)
    assert any("not the one the signer anchored" in p for p in verify_audit(runtime).problems)


def test_a_deleted_event_is_caught_though_the_rest_is_renumbered(runtime: Runtime) -> None:
    some_events(runtime, 4)
    runtime.anchor_audit()
    seq = last_anchor(runtime)
    delete_event(runtime, seq - 2)
    assert chain_alone_ok(runtime)
    problems = " ".join(verify_audit(runtime).problems)
    assert f"audit event {seq}, which the signer anchored, is gone" in problems


def test_a_rewritten_chain_grown_past_the_anchor_is_caught(runtime: Runtime) -> None:
    """The gap of the single anchor: rewrite below it, write on until the head passes it, and
    the next pass anchors the rewritten chain. The earlier anchor still names the event."""
    some_events(runtime, 3)
    runtime.anchor_audit()
    first = last_anchor(runtime)
    edit_event(runtime, 2)
    some_events(runtime, 3, prefix="later")  # the service writes on the rewritten chain
    runtime.anchor_audit()  # accepted: the signer cannot see the events between two heads
    anchors = runtime.signer.audit_anchors()
    assert anchors[-1][0] > first

    with runtime.db.read() as uow:
        only_last = verify(uow, runtime.tags, runtime.db.audit_key, anchors=anchors[-1:])
    assert only_last.ok  # what `audit verify` accepted before it read every anchor
    problems = verify_audit(runtime).problems
    assert f"audit event {first} is not the one the signer anchored (the log was rewritten)" in (
        problems
    )


def test_an_intact_log_passes_against_every_anchor(runtime: Runtime) -> None:
    fund_wallet(runtime)
    some_events(runtime, 1)
    runtime.tick()
    sign_a_payout(runtime, 3)
    some_events(runtime, 1, prefix="later")
    runtime.tick()
    assert len(runtime.signer.audit_anchors()) >= 3
    report = verify_audit(runtime)
    assert report.ok, report.problems


# -- the wire ------------------------------------------------------------------------------


def test_anchors_come_in_pages(runtime: Runtime) -> None:
    heads = [(seq, f"{seq:064x}") for seq in range(1, 6)]
    for seq, head_hash in heads:
        runtime.signer.anchor_audit(seq, head_hash)
    first: dict[str, Any] = runtime.signer.call("audit_anchors", {"after": 0, "limit": 2})  # type: ignore[attr-defined]
    assert first == {"seqs": [1, 2], "hashes": [heads[0][1], heads[1][1]], "next_after": 2}
    last = runtime.signer.call("audit_anchors", {"after": 4, "limit": 2})  # type: ignore[attr-defined]
    assert last == {"seqs": [5], "hashes": [heads[4][1]], "next_after": None}
    assert runtime.signer.audit_anchors() == heads


@pytest.mark.parametrize(
    "params",
    [
        {"seq": -1, "hash": "0" * 64},
        {"seq": True, "hash": "0" * 64},
        {"seq": 1, "hash": "xyz"},
        {"seq": 1, "hash": "A" * 64},
        {"seq": 1},
    ],
)
def test_a_malformed_head_is_refused(runtime: Runtime, params: dict[str, Any]) -> None:
    with pytest.raises(InvalidInput):
        runtime.signer.call("anchor_audit", params)  # type: ignore[attr-defined]
    assert runtime.signer.audit_anchors() == []


def test_a_head_that_changed_or_went_back_is_refused_by_the_signer(runtime: Runtime) -> None:
    from walletsvc.domain.errors import SigningRefused

    runtime.signer.anchor_audit(5, "a" * 64)
    with pytest.raises(SigningRefused, match="went back"):
        runtime.signer.anchor_audit(4, "b" * 64)
    with pytest.raises(SigningRefused, match="changed"):
        runtime.signer.anchor_audit(5, "b" * 64)
    runtime.signer.anchor_audit(5, "a" * 64)  # the same head again: fine, nothing new
    assert runtime.signer.audit_anchors() == [(5, "a" * 64)]
