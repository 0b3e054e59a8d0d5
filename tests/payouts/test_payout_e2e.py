"""End to end on the embedded chain: deposit, mature, request over HTTP, sign, broadcast, mine,
confirm; then check the signed transaction and the wallet's balances to the satoshi."""

from __future__ import annotations

import pytest
from bitcoin.core import b2lx
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import WALLET, Tokens, auth, fund_wallet
from tests.helpers import (
    PAYOUT_SAT,
    audit_actions,
    count_rows,
    decode_tx,
    embedded,
    external_destination,
    prevout_amount,
    request_payout,
    show_withdrawal,
    txid_of,
    wallet_balances,
)
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import Address, ChainTransaction
from walletsvc.domain.network import Network
from walletsvc.domain.transaction import CHANGE_CHAIN, RBF_SEQUENCE
from walletsvc.keys.hd import AccountXpub

pytestmark = pytest.mark.kernel


def _fund_via_deposit_address(client: TestClient, runtime: Runtime, token: str) -> str:
    """Issue a deposit address over HTTP, mine coinbases to it, mature them, scan."""
    response = client.post(
        f"/v1/wallets/{WALLET}/deposit-addresses", headers=auth(token), json={"label": "pool"}
    )
    assert response.status_code == 201, response.text
    address = response.json()["address"]
    with runtime.db.read() as session:
        script = session.scalar(select(Address.script_pubkey).where(Address.address == address))
    assert script is not None
    chain = embedded(runtime)
    chain.mine(3, bytes.fromhex(script))
    chain.mine(100)  # to a burn script: matures the three coinbases, pays us nothing
    runtime.scanner.sync()
    return address


def test_payout_confirms_and_adds_up_to_the_satoshi(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    chain = embedded(runtime)
    _fund_via_deposit_address(client, runtime, tokens.all)
    before = wallet_balances(client, tokens.all)
    subsidy = 50 * 100_000_000
    assert before["total_sat"] == 3 * subsidy
    assert before["confirmed_sat"] == 3 * subsidy  # depth >= 100: all three are mature
    assert before["reserved_sat"] == 0

    destination, dest_script = external_destination("e2e miner")
    created = request_payout(client, tokens.all, key="e2e-1", destination=destination)
    assert created.status_code == 201, created.text
    payout = created.json()
    assert payout["status"] == "approved"
    assert payout["decision"]["outcome"] == "allow"
    assert payout["txid"] is None and payout["raw_tx"] is None
    assert wallet_balances(client, tokens.all)["reserved_sat"] == PAYOUT_SAT

    report = runtime.worker.run_once()
    assert len(report.signed_txids) == 1 and report.broadcast_txids == report.signed_txids
    txid = report.signed_txids[0]
    view = show_withdrawal(client, tokens.all, payout["id"])
    assert view["status"] == "broadcast"
    assert view["txid"] == txid
    assert txid in chain.mempool_txids()
    in_flight = wallet_balances(client, tokens.all)
    assert in_flight["reserved_sat"] == 0
    assert in_flight["in_flight_sat"] == subsidy  # the one coinbase the transaction spends

    chain.mine(1)
    runtime.scanner.sync()
    view = show_withdrawal(client, tokens.all, payout["id"])
    assert view["status"] == "confirmed"
    assert view["confirmations"] == 1
    chain.mine(2)
    runtime.scanner.sync()
    view = show_withdrawal(client, tokens.all, payout["id"])
    assert view["confirmations"] == 3
    assert view["txid"] == txid
    assert chain.confirmations(txid) == 3

    # The transaction itself: decoded independently, priced with the chain's own amounts.
    tx = decode_tx(view["raw_tx"])
    assert txid_of(tx) == txid
    value_in = sum(
        prevout_amount(chain, b2lx(txin.prevout.hash), txin.prevout.n) for txin in tx.vin
    )
    value_out = sum(int(out.nValue) for out in tx.vout)
    fee = value_in - value_out
    assert fee > 0
    assert view["fee_sat"] == fee == view["transaction_fee_sat"]
    assert all(txin.nSequence == RBF_SEQUENCE for txin in tx.vin)  # signals BIP125
    payouts = [out for out in tx.vout if bytes(out.scriptPubKey) == dest_script]
    assert len(payouts) == 1 and int(payouts[0].nValue) == PAYOUT_SAT
    change = [out for out in tx.vout if bytes(out.scriptPubKey) != dest_script]
    assert len(change) == 1
    xpub = AccountXpub.parse(
        client.get(f"/v1/wallets/{WALLET}", headers=auth(tokens.all)).json()["account_xpub"],
        Network.REGTEST,
    )
    ours = {xpub.script_pubkey(CHANGE_CHAIN, i) for i in range(5)}
    assert bytes(change[0].scriptPubKey) in ours
    assert value_in == PAYOUT_SAT + int(change[0].nValue) + fee

    # Balances: the total dropped by exactly amount + fee; the change is ours and confirmed.
    after = wallet_balances(client, tokens.all)
    assert after["total_sat"] == before["total_sat"] - PAYOUT_SAT - fee
    assert after["in_flight_sat"] == 0 and after["reserved_sat"] == 0
    assert after["confirmed_sat"] == after["total_sat"]

    with runtime.db.read() as session:
        stored = session.scalars(select(ChainTransaction)).one()
    assert (stored.status, stored.txid, stored.raw_tx) == ("confirmed", txid, view["raw_tx"])
    actions = audit_actions(runtime.db)
    for action in (
        "withdrawal.requested",
        "transaction.signed",
        "transaction.broadcast",
        "transaction.confirmed",
    ):
        assert actions.count(action) == 1, action


def test_payout_without_funds_waits_then_goes_through(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    chain = embedded(runtime)
    destination, dest_script = external_destination("patient miner")
    created = request_payout(client, tokens.all, key="wait-1", destination=destination)
    assert created.status_code == 201, created.text
    withdrawal_id = created.json()["id"]

    for _ in range(2):  # repeated passes change nothing while the wallet is empty
        report = runtime.worker.run_once()
        assert report.signed_txids == [] and report.errors
        view = show_withdrawal(client, tokens.all, withdrawal_id)
        assert view["status"] == "approved" and view["txid"] is None
    assert count_rows(runtime.db, ChainTransaction) == {"chain_transactions": 0}
    assert wallet_balances(client, tokens.all)["reserved_sat"] == PAYOUT_SAT

    fund_wallet(runtime)
    runtime.tick()
    view = show_withdrawal(client, tokens.all, withdrawal_id)
    assert view["status"] == "broadcast"
    assert view["txid"] in chain.mempool_txids()
    chain.mine(1)
    runtime.tick()
    view = show_withdrawal(client, tokens.all, withdrawal_id)
    assert view["status"] == "confirmed" and view["confirmations"] == 1
    tx = decode_tx(view["raw_tx"])
    assert [int(o.nValue) for o in tx.vout if bytes(o.scriptPubKey) == dest_script] == [PAYOUT_SAT]
    assert count_rows(runtime.db, ChainTransaction) == {"chain_transactions": 1}


def test_two_payouts_share_one_transaction_and_split_its_fee(
    client: TestClient, funded: Runtime, tokens: Tokens
) -> None:
    chain = embedded(funded)
    first, first_script = external_destination("batch miner 1")
    second, second_script = external_destination("batch miner 2")
    a = request_payout(client, tokens.all, key="batch-a", destination=first, amount_sat=700_000)
    b = request_payout(client, tokens.all, key="batch-b", destination=second, amount_sat=800_001)
    assert a.status_code == b.status_code == 201
    before = wallet_balances(client, tokens.all)["total_sat"]
    funded.tick()
    chain.mine(1)
    funded.tick()
    va = show_withdrawal(client, tokens.all, a.json()["id"])
    vb = show_withdrawal(client, tokens.all, b.json()["id"])
    assert va["status"] == vb["status"] == "confirmed"
    assert va["txid"] == vb["txid"]
    fee = va["transaction_fee_sat"]
    assert va["fee_sat"] + vb["fee_sat"] == fee
    tx = decode_tx(va["raw_tx"])
    outs = {bytes(o.scriptPubKey): int(o.nValue) for o in tx.vout}
    assert outs[first_script] == 700_000 and outs[second_script] == 800_001
    after = wallet_balances(client, tokens.all)["total_sat"]
    assert after == before - 700_000 - 800_001 - fee
