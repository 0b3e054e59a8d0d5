"""BIP125 fee bumps on the embedded chain: a payout batch stuck for N blocks is replaced (same
payouts, higher fee); only one of the two can ever confirm, and the payouts confirm once, with
the txid that did."""

from __future__ import annotations

from typing import Any

import pytest
from bitcoin.core import b2lx
from fastapi.testclient import TestClient
from sqlalchemy import select, update

from tests.conftest import Tokens
from tests.helpers import (
    audit_events,
    decode_tx,
    embedded,
    external_destination,
    prevout_amount,
    request_payout,
    show_withdrawal,
    verify_audit,
    wallet_balances,
)
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import ChainTransaction, Withdrawal
from walletsvc.devchain import blocks
from walletsvc.devchain.embedded import EmbeddedChain
from walletsvc.domain.errors import ChainRejected
from walletsvc.payouts.worker import split_fee
from walletsvc.wallets.freezes import active_freezes

pytestmark = pytest.mark.kernel

STUCK_AFTER = 3


def mine_empty(chain: EmbeddedChain, n: int) -> None:
    """Blocks without our transaction: a miner ignoring it (its fee rate too low)."""
    for _ in range(n):
        raw = chain.build_block(
            chain.tip().hash, [], coinbase_script_pubkey=blocks.BURN_SCRIPT_PUBKEY
        )
        assert chain.submit_block(raw)


def stuck_batch(
    client: TestClient, runtime: Runtime, token: str
) -> tuple[list[dict[str, Any]], ChainTransaction, int]:
    runtime.settings.rbf_after_blocks = STUCK_AFTER
    made = []
    for i in range(3):
        address, script = external_destination(f"rbf miner {i}")
        response = request_payout(
            client, token, key=f"rbf-{i}", destination=address, amount_sat=700_000 + i
        )
        assert response.status_code == 201, response.text
        made.append({"id": response.json()["id"], "script": script, "amount": 700_000 + i})
    before = wallet_balances(client, token)["total_sat"]
    report = runtime.worker.run_once()
    assert len(report.broadcast_txids) == 1
    with runtime.db.read() as uow:
        s = uow.session
        original = s.scalars(select(ChainTransaction)).one()
    chain = embedded(runtime)
    mine_empty(chain, STUCK_AFTER - 1)
    runtime.tick()
    assert chain.mempool_txids() == {original.txid}  # not stuck long enough yet
    mine_empty(chain, 1)
    runtime.tick()  # scan, bump, store, then broadcast the replacement
    return made, original, before


def _transactions(runtime: Runtime) -> dict[str, ChainTransaction]:
    with runtime.db.read() as uow:
        s = uow.session
        return {t.txid: t for t in s.scalars(select(ChainTransaction))}


def test_stuck_batch_is_replaced_and_only_the_replacement_confirms(
    client: TestClient, funded: Runtime, tokens: Tokens
) -> None:
    chain = embedded(funded)
    made, original, before = stuck_batch(client, funded, tokens.all)

    txs = _transactions(funded)
    assert len(txs) == 2
    old = txs[original.txid]
    new = next(t for t in txs.values() if t.txid != original.txid)
    assert old.status == "replaced"
    assert new.status == "broadcast" and new.replaces_id == old.id
    assert new.fee_sat > old.fee_sat and new.fee_rate_sat_per_vb > old.fee_rate_sat_per_vb
    assert chain.mempool_txids() == {new.txid}  # the original left the mempool
    decoded_old, decoded_new = decode_tx(old.raw_tx), decode_tx(new.raw_tx)
    # Same inputs (so the two conflict), every payout once and unchanged.
    old_inputs = {(b2lx(i.prevout.hash), i.prevout.n) for i in decoded_old.vin}
    assert old_inputs <= {(b2lx(i.prevout.hash), i.prevout.n) for i in decoded_new.vin}
    for payout in made:
        paid = [o for o in decoded_new.vout if bytes(o.scriptPubKey) == payout["script"]]
        assert [int(o.nValue) for o in paid] == [payout["amount"]]
    views = [show_withdrawal(client, tokens.all, p["id"]) for p in made]
    assert {v["txid"] for v in views} == {new.txid}
    assert [v["fee_sat"] for v in views] == split_fee(new.fee_sat, 3)

    chain.mine(1)
    funded.tick()
    views = [show_withdrawal(client, tokens.all, p["id"]) for p in made]
    assert {(v["status"], v["txid"]) for v in views} == {("confirmed", new.txid)}
    assert chain.confirmations(new.txid) == 1 and chain.confirmations(old.txid) == 0
    with pytest.raises(ChainRejected):  # the original can never confirm now
        chain.broadcast(bytes.fromhex(old.raw_tx))
    value_in = sum(
        prevout_amount(chain, b2lx(i.prevout.hash), i.prevout.n) for i in decoded_new.vin
    )
    assert value_in - sum(int(o.nValue) for o in decoded_new.vout) == new.fee_sat
    after = wallet_balances(client, tokens.all)["total_sat"]
    assert after == before - sum(p["amount"] for p in made) - new.fee_sat
    confirmed = audit_events(funded.db, "transaction.confirmed")
    assert [e.data["txid"] for e in confirmed] == [new.txid]  # each payout confirmed once
    assert len(audit_events(funded.db, "transaction.replaced")) == 1
    assert verify_audit(funded).ok


def test_original_confirming_after_the_bump_kills_the_replacement(
    client: TestClient, funded: Runtime, tokens: Tokens
) -> None:
    chain = embedded(funded)
    made, original, before = stuck_batch(client, funded, tokens.all)
    new = next(t for t in _transactions(funded).values() if t.txid != original.txid)
    assert chain.mempool_txids() == {new.txid}

    # A miner that still had the original in its mempool mines it.
    raw_block = chain.build_block(
        chain.tip().hash,
        [bytes.fromhex(original.raw_tx)],
        coinbase_script_pubkey=blocks.BURN_SCRIPT_PUBKEY,
    )
    assert chain.submit_block(raw_block)
    funded.tick()

    txs = _transactions(funded)
    assert txs[original.txid].status == "confirmed"
    assert txs[new.txid].status == "dead"
    assert new.txid not in chain.mempool_txids()
    views = [show_withdrawal(client, tokens.all, p["id"]) for p in made]
    assert {(v["status"], v["txid"]) for v in views} == {("confirmed", original.txid)}
    assert [v["fee_sat"] for v in views] == split_fee(original.fee_sat, 3)
    after = wallet_balances(client, tokens.all)
    assert after["total_sat"] == before - sum(p["amount"] for p in made) - original.fee_sat
    assert after["in_flight_sat"] == 0

    # Later passes change nothing: no re-bump of a confirmed batch, no second confirmation.
    chain.mine(2)
    funded.tick()
    confirmed = audit_events(funded.db, "transaction.confirmed")
    assert [e.data["txid"] for e in confirmed] == [original.txid]
    dead = audit_events(funded.db, "transaction.replacement_dead")
    assert len(dead) == 1 and dead[0].data["dead_txids"] == [new.txid]
    assert verify_audit(funded).ok


def test_a_bump_of_an_altered_payout_is_refused_and_freezes_the_wallet(
    client: TestClient, funded: Runtime, tokens: Tokens
) -> None:
    """The fee bumper re-checks each payout's authorisation tag; an edited row is an integrity
    alarm, and the risk monitor freezes the wallet (as for the payout worker)."""
    funded.settings.rbf_after_blocks = STUCK_AFTER
    address, _ = external_destination("rbf tampered miner")
    created = request_payout(client, tokens.all, key="rbf-tamper", destination=address)
    assert created.status_code == 201
    assert len(funded.worker.run_once().broadcast_txids) == 1
    with funded.db.write() as uow:  # an attacker with SQL access raises the amount
        uow.session.execute(
            update(Withdrawal)
            .where(Withdrawal.id == created.json()["id"])
            .values(amount_sat=Withdrawal.amount_sat + 1_000_000)
        )
    chain = embedded(funded)
    mine_empty(chain, STUCK_AFTER)
    funded.scanner.sync()
    assert funded.fee_bumper.bump_stuck() == []
    with funded.db.read() as uow:
        s = uow.session
        assert [t.status for t in s.scalars(select(ChainTransaction))] == ["broadcast"]
        freezes = active_freezes(uow)
    assert [f.source for f in freezes] == ["risk"]
