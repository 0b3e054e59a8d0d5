"""The risk monitor wired in: real requests, the real signer and the embedded chain.

Each rule fires on its evidence (an automatic freeze names the rule and the evidence, or an
alert is audited) and stays quiet on normal traffic.
"""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import delete, select, update

from tests.conftest import WALLET, fund_wallet
from tests.governance_helpers import default_document, install
from tests.helpers import audit_events, external_destination
from tests.signer_helpers import sign_with_stolen_files
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import Wallet, Withdrawal
from walletsvc.db.models_incident import Freeze
from walletsvc.db.models_risk import RiskEvent
from walletsvc.domain.errors import PolicyDenied, VerificationFailed
from walletsvc.domain.txplan import plan_sweep
from walletsvc.payouts.intake import WithdrawalInput, request_withdrawal
from walletsvc.payouts.signing import spendable_coins
from walletsvc.wallets.freezes import active_freezes
from walletsvc.wallets.service import next_change_path

RULES: list[dict[str, Any]] = [
    {"id": "burst", "kind": "denied_burst", "action": "freeze",
     "params": {"count": 5, "window": "10m"}},
    {"id": "rate", "kind": "request_rate", "action": "alert",
     "params": {"max_count": 30, "window": "10m"}},
    {"id": "velo", "kind": "velocity_fraction", "action": "alert",
     "params": {"fraction_pct": 50}},
    {"id": "newdest", "kind": "new_destination_large", "action": "alert",
     "params": {"min_amount_sat": 5_000_000}},
    {"id": "dup", "kind": "duplicate_payment", "action": "freeze",
     "params": {"window": "1h"}},
]  # fmt: skip


@pytest.fixture
def guarded(runtime: Runtime) -> Runtime:
    install(runtime, default_document(risk={"rules": RULES}))
    return runtime


def ask(runtime: Runtime, n: int, *, amount: int, dest: str | None = None, token: str = "t1"):  # type: ignore[no-untyped-def]
    destination = dest or external_destination(f"miner {n}")[0]
    return request_withdrawal(
        runtime.db,
        runtime.tags,
        body=WithdrawalInput(WALLET, destination, amount, f"r{n}"),
        idempotency_key=f"k{n}",
        token_id=token,
        actor=f"token:{token}",
    )


def risk_events(runtime: Runtime) -> list[RiskEvent]:
    with runtime.db.read() as uow:
        s = uow.session
        return list(s.scalars(select(RiskEvent).order_by(RiskEvent.created_at)))


def freezes(runtime: Runtime) -> list[Freeze]:
    with runtime.db.read() as uow:
        return active_freezes(uow)


def test_normal_traffic_fires_nothing(guarded: Runtime) -> None:
    fund_wallet(guarded)
    for n in range(10):
        ask(guarded, n, amount=100_000)  # small, varied destinations, a calm rate
    guarded.tick()
    guarded.chain.mine(1, external_destination("pool")[1])  # type: ignore[attr-defined]
    guarded.tick()
    assert risk_events(guarded) == []
    assert freezes(guarded) == []


def test_burst_of_denials_from_one_token_freezes_with_evidence(guarded: Runtime) -> None:
    for n in range(4):
        with pytest.raises(PolicyDenied):
            ask(guarded, n, amount=60_000_000)  # above max_per_payout
    guarded.risk.evaluate()
    assert freezes(guarded) == []  # four is not a burst of five
    with pytest.raises(PolicyDenied):
        ask(guarded, 9, amount=60_000_000)
    guarded.risk.evaluate()
    guarded.risk.evaluate()  # the same evidence is acted on once
    (frozen,) = freezes(guarded)
    assert frozen.source == "risk" and frozen.scope == "withdrawals"
    assert frozen.evidence["rule"] == "burst"
    assert frozen.evidence["who"] == "token:t1"
    assert len(frozen.evidence["denied"]) == 5
    assert "burst" in frozen.reason
    applied = audit_events(guarded.db, "freeze.applied")[-1]
    assert applied.data["source"] == "risk" and applied.data["evidence"]["rule"] == "burst"


def test_alert_rules_audit_and_do_not_freeze(guarded: Runtime) -> None:
    # 50% of the 2 BTC hourly wallet cap crossed, by a large payout to a new destination.
    ask(guarded, 1, amount=40_000_000)
    ask(guarded, 2, amount=40_000_000)
    ask(guarded, 3, amount=30_000_000)
    for n in range(10, 41):
        ask(guarded, n, amount=10_000)
    guarded.risk.evaluate()
    fired = {e.rule_id for e in risk_events(guarded)}
    assert fired == {"velo", "newdest", "rate"}
    assert freezes(guarded) == []
    alerts = audit_events(guarded.db, "risk.alert")
    assert {a.data["rule"] for a in alerts} == fired


def test_signer_refusal_freezes_the_wallet(
    guarded: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    fund_wallet(guarded)
    ask(guarded, 1, amount=100_000)

    class Refusing:  # fault injection: the kernel refuses what the signer produced
        def sign(self, **_: Any) -> Any:
            raise VerificationFailed("kernel refused input 0")

    monkeypatch.setattr(guarded.worker, "signer", Refusing())
    guarded.worker.run_once()
    (frozen,) = freezes(guarded)
    assert frozen.evidence["kind"] == "signer_failure"
    assert frozen.evidence["code"] == "verification_failed"


def test_integrity_failure_freezes(guarded: Runtime) -> None:
    fund_wallet(guarded)
    wid = ask(guarded, 1, amount=100_000).withdrawal_id
    with guarded.db.write() as uow:
        uow.session.execute(update(Withdrawal).where(Withdrawal.id == wid).values(amount_sat=9))
    guarded.tick()  # the worker refuses the row; the next risk pass freezes
    guarded.tick()
    (frozen,) = freezes(guarded)
    assert frozen.evidence["code"] == "integrity.failure"


def test_a_spend_we_never_signed_freezes_everything(guarded: Runtime) -> None:
    fund_wallet(guarded)
    thief_address, thief_script = external_destination("thief")
    rt = guarded
    with rt.db.write() as uow:  # the attacker holds our key: signs outside the service
        s = uow.session
        wallet = s.scalars(select(Wallet)).one()
        change_path, change_script = next_change_path(uow, wallet)
        coins = spendable_coins(uow, wallet)[:2]
        plan = plan_sweep(
            coins,
            destination_script=thief_script,
            keep_sat=None,
            fee_rate_sat_per_vb=2,
            max_fee_sat=100_000,
            change_script=change_script,
            change_path=change_path,
            min_confirmations=1,
        )
        signed = sign_with_stolen_files(
            rt.settings, WALLET, plan, sweep_scripts=frozenset({thief_script})
        )
    rt.chain.broadcast(signed.raw)
    rt.chain.mine(1, external_destination("pool")[1])  # type: ignore[attr-defined]
    rt.scanner.sync()
    (frozen,) = freezes(rt)
    assert frozen.scope == "all" and frozen.evidence["kind"] == "foreign_spend"
    assert frozen.evidence["txid"] == signed.txid
    assert len(frozen.evidence["outpoints"]) == 2
    assert thief_address  # the evidence names the transaction; the address is on chain


def test_same_destination_paid_twice_freezes(guarded: Runtime) -> None:
    fund_wallet(guarded)
    dest = external_destination("twice")[0]
    ask(guarded, 1, amount=250_000, dest=dest)
    guarded.tick()
    guarded.chain.mine(1, external_destination("pool")[1])  # type: ignore[attr-defined]
    guarded.tick()
    assert freezes(guarded) == []  # one payment is normal
    ask(guarded, 2, amount=250_000, dest=dest)
    guarded.tick()
    guarded.chain.mine(1, external_destination("pool")[1])  # type: ignore[attr-defined]
    guarded.scanner.sync()
    (frozen,) = freezes(guarded)
    assert frozen.evidence["kind"] == "duplicate_payment"
    assert frozen.evidence["amount_sat"] == 250_000
    assert len(frozen.evidence["outputs"]) == 2


def test_an_automatic_freeze_reaches_the_signer_and_outlives_its_row(guarded: Runtime) -> None:
    """A risk freeze stops the signer first: a database writer deleting the freeze row then
    gets no payout signed (the signer's own freeze is in its ledger)."""
    fund_wallet(guarded)
    for n in range(5):
        with pytest.raises(PolicyDenied):
            ask(guarded, n, amount=60_000_000)  # a burst of denials: the risk rule freezes
    guarded.risk.evaluate()
    (frozen,) = freezes(guarded)
    assert frozen.source == "risk"
    assert WALLET in guarded.signer.status()["frozen"]

    with guarded.db.engine.begin() as conn:  # the attacker: the database, not the signer
        conn.execute(delete(RiskEvent))
        conn.execute(delete(Freeze))
    assert freezes(guarded) == []
    wid = ask(guarded, 10, amount=100_000).withdrawal_id
    guarded.worker.run_once()
    with guarded.db.read() as uow:
        row = uow.session.get(Withdrawal, wid)
        assert row is not None
        assert row.status == "approved" and row.transaction_id is None  # the signer refused
    assert guarded.signer.status()["signed_transactions"] == 0
