"""Real reorganisations on the embedded chain: the kernel switches to a longer branch built with
build_block/submit_block, and Scanner.sync() rolls our records back to the fork and rescans."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from bitcoin.core import CBlock, CBlockHeader, b2lx
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.chain.conftest import Prevout, make_key, spend, txid_of
from tests.conftest import WALLET, Tokens, fund_wallet
from tests.helpers import (
    PAYOUT_SAT,
    audit_events,
    embedded,
    external_destination,
    request_payout,
    show_withdrawal,
    utxo_keys,
    wallet_balances,
)
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import ChainTransaction, Utxo
from walletsvc.devchain.embedded import EmbeddedChain
from walletsvc.wallets.service import current_address, get_wallet

pytestmark = pytest.mark.kernel

BURN = bytes.fromhex("6a")  # OP_RETURN: the competing miner pays nobody we know
DEPOSIT_SAT = 7_654_321


@dataclass(frozen=True)
class Funded:
    deposit_script: bytes
    alice_coin: Prevout  # a mature coin of an outsider who pays us a deposit


def _setup(runtime: Runtime) -> Funded:
    chain = embedded(runtime)
    alice = make_key(7)
    (cb_hash,) = chain.mine(1, alice.script_pubkey)
    fund_wallet(runtime)  # 110 blocks to us: also matures alice's coinbase
    height = chain.block_height(cb_hash)
    ((txid, vout), utxo) = next(
        (op, u)
        for op, u in chain.utxos_for_script(alice.script_pubkey).items()
        if u.height == height
    )
    with runtime.db.read() as session:
        script = bytes.fromhex(current_address(session, get_wallet(session, WALLET)).script_pubkey)
    return Funded(script, Prevout(txid, vout, utxo.amount_sat, alice))


def _extend(chain: EmbeddedChain, parent: str, txs: list[bytes], blocks: int) -> list[str]:
    """Build and submit ``blocks`` blocks on ``parent`` (the first holding ``txs``)."""
    hashes = []
    for i in range(blocks):
        raw = chain.build_block(
            parent, txs if i == 0 else [], coinbase_script_pubkey=BURN, extra_nonce=1_000 + i
        )
        chain.submit_block(raw)
        parent = str(b2lx(CBlockHeader.deserialize(raw[:80]).GetHash()))
        hashes.append(parent)
    return hashes


def _utxo(runtime: Runtime, txid: str) -> Utxo | None:
    with runtime.db.read() as session:
        return session.scalar(select(Utxo).where(Utxo.txid == txid))


def test_reorg_drops_deposit_and_payout_then_both_confirm_again_on_the_new_branch(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    chain = embedded(runtime)
    funded = _setup(runtime)
    destination, _ = external_destination("reorg miner")
    created = request_payout(client, tokens.all, key="reorg-1", destination=destination)
    assert created.status_code == 201
    withdrawal_id = created.json()["id"]
    runtime.tick()
    payout = show_withdrawal(client, tokens.all, withdrawal_id)
    assert payout["status"] == "broadcast"
    deposit = spend(
        [funded.alice_coin],
        [(funded.deposit_script, DEPOSIT_SAT), (make_key(8).script_pubkey, 1_000_000)],
    )
    deposit_txid = txid_of(deposit)
    assert chain.broadcast(deposit) == deposit_txid
    before = wallet_balances(client, tokens.all)

    fork = chain.tip()
    # Branch A: one block with both transactions.
    (a1,) = chain.mine(1)
    runtime.scanner.sync()
    confirmed = show_withdrawal(client, tokens.all, withdrawal_id)
    assert confirmed["status"] == "confirmed" and confirmed["confirmations"] == 1
    seen = _utxo(runtime, deposit_txid)
    assert seen is not None and (seen.block_height, seen.block_hash) == (fork.height + 1, a1)
    on_a = wallet_balances(client, tokens.all)
    fee = confirmed["transaction_fee_sat"]
    assert on_a["total_sat"] == before["total_sat"] - PAYOUT_SAT - fee + DEPOSIT_SAT
    utxos_on_a = utxo_keys(runtime.db)

    # Branch B: two empty blocks on the fork point; the kernel switches to it.
    b_hashes = _extend(chain, fork.hash, [], 2)
    assert chain.tip().hash == b_hashes[-1] and chain.tip().height == fork.height + 2
    assert not chain.is_active(a1)
    assert {payout["txid"], deposit_txid} <= chain.mempool_txids()  # back in the mempool

    report = runtime.scanner.sync()
    assert report.rolled_back_to == fork.height
    reorgs = audit_events(runtime.db, "chain.reorg")
    assert len(reorgs) == 1
    assert reorgs[0].data["fork_height"] == fork.height
    assert reorgs[0].data["unconfirmed_txids"] == [payout["txid"]]
    back = show_withdrawal(client, tokens.all, withdrawal_id)
    assert back["status"] == "broadcast" and back["confirmations"] == 0
    with runtime.db.read() as session:
        tx = session.scalars(select(ChainTransaction)).one()
    assert (tx.status, tx.block_height, tx.block_hash) == ("broadcast", None, None)
    gone = _utxo(runtime, deposit_txid)
    assert gone is not None and gone.block_height is None  # ours, but unconfirmed now
    unconfirmed = wallet_balances(client, tokens.all)
    assert (
        unconfirmed["confirmed_sat"] + unconfirmed["immature_sat"]
        < on_a["confirmed_sat"] + (on_a["immature_sat"])
    )
    assert unconfirmed["unconfirmed_sat"] >= DEPOSIT_SAT

    # Mined again on B: confirmed again, at B's height and in B's block.
    (b3,) = chain.mine(1)
    runtime.scanner.sync()
    again = show_withdrawal(client, tokens.all, withdrawal_id)
    assert again["status"] == "confirmed" and again["confirmations"] == 1
    with runtime.db.read() as session:
        tx = session.scalars(select(ChainTransaction)).one()
    assert (tx.status, tx.block_height, tx.block_hash) == ("confirmed", fork.height + 3, b3)
    redeposit = _utxo(runtime, deposit_txid)
    assert redeposit is not None
    assert (redeposit.block_height, redeposit.block_hash) == (fork.height + 3, b3)
    final = wallet_balances(client, tokens.all)
    assert final["total_sat"] == on_a["total_sat"]
    assert final["unconfirmed_sat"] == 0 and final["in_flight_sat"] == 0
    assert utxo_keys(runtime.db) == utxos_on_a  # the same coins, no duplicates
    seen_events = [
        e for e in audit_events(runtime.db, "deposit.seen") if e.data["txid"] == deposit_txid
    ]
    assert len(seen_events) == 1


def test_reorg_keeping_the_payout_records_the_new_block(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    chain = embedded(runtime)
    fund_wallet(runtime)
    destination, _ = external_destination("steady miner")
    created = request_payout(client, tokens.all, key="keep-1", destination=destination)
    withdrawal_id = created.json()["id"]
    runtime.tick()
    raw = bytes.fromhex(show_withdrawal(client, tokens.all, withdrawal_id)["raw_tx"])
    fork = chain.tip()
    (a1,) = chain.mine(1)
    runtime.scanner.sync()
    assert show_withdrawal(client, tokens.all, withdrawal_id)["status"] == "confirmed"
    on_a = wallet_balances(client, tokens.all)
    utxos_on_a = utxo_keys(runtime.db)

    # Branch B re-mines the same transaction in its first block, and is longer.
    b1, _b2 = _extend(chain, fork.hash, [raw], 2)
    assert b1 != a1 and not chain.is_active(a1)
    assert chain.transaction_block(txid_of(raw)) is not None
    report = runtime.scanner.sync()
    assert report.rolled_back_to == fork.height

    view = show_withdrawal(client, tokens.all, withdrawal_id)
    assert view["status"] == "confirmed" and view["confirmations"] == 2
    with runtime.db.read() as session:
        tx = session.scalars(select(ChainTransaction)).one()
        change = list(session.scalars(select(Utxo).where(Utxo.txid == tx.txid)))
    assert (tx.block_height, tx.block_hash) == (fork.height + 1, b1)
    assert change and all((u.block_height, u.block_hash) == (fork.height + 1, b1) for u in change)
    assert utxo_keys(runtime.db) == utxos_on_a
    assert wallet_balances(client, tokens.all)["total_sat"] == on_a["total_sat"]
    assert len(audit_events(runtime.db, "chain.reorg")) == 1
    assert len(audit_events(runtime.db, "transaction.confirmed")) == 2


def test_reorg_removes_a_coinbase_deposit_that_the_new_branch_lacks(
    client: TestClient, runtime: Runtime, tokens: Tokens
) -> None:
    """A coinbase paying us on the losing branch can never be mined again: it must not count."""
    chain = embedded(runtime)
    funded = _setup(runtime)
    before = wallet_balances(client, tokens.all)
    fork = chain.tip()
    (a1,) = chain.mine(1, funded.deposit_script)
    runtime.scanner.sync()
    assert wallet_balances(client, tokens.all)["total_sat"] > before["total_sat"]
    _extend(chain, fork.hash, [], 2)
    assert not chain.is_active(a1)
    runtime.scanner.sync()
    after = wallet_balances(client, tokens.all)
    assert after["total_sat"] == before["total_sat"]
    assert after["unconfirmed_sat"] == before["unconfirmed_sat"] == 0
    coinbase_txid = txid_of(CBlock.deserialize(chain.block_bytes(a1)).vtx[0].serialize())
    assert _utxo(runtime, coinbase_txid) is None
    (reorg,) = audit_events(runtime.db, "chain.reorg")
    assert reorg.data["dropped_coinbase_outputs"] == [f"{coinbase_txid}:0"]
