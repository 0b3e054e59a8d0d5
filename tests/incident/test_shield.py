"""The theft shield on the embedded chain: a thief holding our seed spends a hot coin; the
mempool watcher sees it and the shield replaces it with a transaction to cold storage.

The thief signs with the wallet's own seed, as an attacker who copied the signer's files
would (tests/signer_helpers.py: the HotSigner, handed the theft as an "approved" payout).
The watcher is driven step by step (``MempoolWatcher.step``): the embedded chain's
notification has queued the txid when ``broadcast`` returns, so nothing here waits on a clock.
"""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest
from bitcoin.core import CBlockHeader, b2lx
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.chainsync.test_rpc_backend_service import PASSWORD, USER, rpc_node
from tests.conftest import WALLET, Tokens, auth, fund_wallet
from tests.governance_helpers import Team, default_document, install
from tests.helpers import (
    audit_actions,
    embedded,
    external_destination,
    initialised,
    opened,
    run_cli,
)
from tests.incident.test_rotation import rotate_with_quorum
from tests.signer_helpers import install_policy_in_signer, sign_with_stolen_files
from tests.treasury.test_sweeps import with_cold
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.chain.mempool import CoreMempoolSource
from walletsvc.chain.rpc import BitcoinRpcBackend
from walletsvc.chainsync.mempool import MempoolWatcher
from walletsvc.config import Settings
from walletsvc.db.models import ChainTransaction, Wallet
from walletsvc.db.models_webhooks import OutboxEvent
from walletsvc.domain.network import Network
from walletsvc.domain.transaction import (
    ApprovedPayout,
    Coin,
    OutputPurpose,
    PlannedOutput,
    SignedTransaction,
    TransactionPlan,
)
from walletsvc.incident.shield import TheftAlert, shield_incidents
from walletsvc.payouts.intake import WithdrawalInput, request_withdrawal
from walletsvc.payouts.signing import spendable_coins, to_coins
from walletsvc.wallets.freezes import active_freezes
from walletsvc.wallets.service import current_address, get_wallet

pytestmark = pytest.mark.kernel

THIEF_ADDRESS, THIEF_SCRIPT = external_destination("thief")
POOL_SCRIPT = external_destination("some miner")[1]


@pytest.fixture
def guarded(runtime: Runtime) -> Runtime:
    runtime.settings.auto_sweep = False  # only the shield moves coins to cold here
    with_cold(runtime)
    fund_wallet(runtime)  # 110 coinbases of 50 BTC, 10 of them mature
    assert runtime.mempool_watcher is not None
    return runtime


def a_hot_coin(runtime: Runtime) -> Coin:
    with runtime.db.read() as uow:
        wallet = uow.session.scalars(select(Wallet)).one()
        return spendable_coins(uow, wallet)[0]


def steal(runtime: Runtime, coin: Coin, *, fee_sat: int) -> SignedTransaction:
    """Sign, with our own seed (stolen), a spend of ``coin`` to the thief, and broadcast it."""
    amount = coin.amount_sat - fee_sat
    plan = TransactionPlan(
        inputs=(coin,),
        outputs=(PlannedOutput(THIEF_SCRIPT, amount, OutputPurpose.PAYOUT, "loot"),),
        fee_sat=fee_sat,
    )
    # The thief holds copies of the signer's files: no rule of the signer's stands in the way.
    signed = sign_with_stolen_files(
        runtime.settings,
        WALLET,
        plan,
        approved=[ApprovedPayout("loot", THIEF_SCRIPT, amount)],
        max_fee_sat=coin.amount_sat,
    )
    assert runtime.chain.broadcast(signed.raw) == signed.txid
    return signed


def watch(runtime: Runtime) -> list[str]:
    """One step of the watcher: the thefts it found (the shield answered each)."""
    assert runtime.mempool_watcher is not None
    return [spend.entry.txid for spend in runtime.mempool_watcher.step()]


def mine(runtime: Runtime, txs: list[str | bytes] | None = None) -> None:
    chain = embedded(runtime)
    if txs is None:
        chain.mine(1, POOL_SCRIPT)
    else:
        chain.generate_block(txs, POOL_SCRIPT)
    runtime.scanner.sync()


def incidents(runtime: Runtime) -> list[dict[str, Any]]:
    return shield_incidents(runtime.db)["incidents"]  # type: ignore[no-any-return]


def thief_received(runtime: Runtime) -> int:
    return sum(u.amount_sat for u in embedded(runtime).utxos_for_script(THIEF_SCRIPT).values())


def shield_freezes(runtime: Runtime) -> list[Any]:
    with runtime.db.read() as uow:
        return [f for f in active_freezes(uow) if f.source == "shield"]


def outbox_types(rt: Runtime) -> set[str]:
    with rt.db.read() as uow:
        return set(uow.session.scalars(select(OutboxEvent.event_type)))


def test_a_low_fee_theft_is_replaced_by_a_transaction_to_cold(guarded: Runtime) -> None:
    rt = guarded
    alerts: list[TheftAlert] = []
    rt.shield.alert_hooks.append(alerts.append)
    coin = a_hot_coin(rt)
    theft = steal(rt, coin, fee_sat=500)

    assert watch(rt) == [theft.txid]

    chain = embedded(rt)
    (incident,) = incidents(rt)
    (round_1,) = incident["rounds"]
    assert round_1["outcome"] == "answered" and round_1["thief_txid"] == theft.txid
    mempool = chain.mempool_txids()
    assert theft.txid not in mempool, "the thief's transaction is still in the mempool"
    assert mempool == {round_1["answer_txid"]}
    # The answer spends the stolen coin and the epoch's other free coins, to cold only.
    with rt.db.read() as uow:
        answer = uow.transactions.by_txid(round_1["answer_txid"])
        assert answer is not None and answer.kind == "shield"
        sweep = uow.sweeps.by_txid(answer.txid)
        assert sweep is not None and sweep.trigger == "shield"
    (frozen,) = shield_freezes(rt)
    assert frozen.scope == "all" and frozen.wallet_id is None
    assert frozen.evidence["thief_txid"] == theft.txid
    # The signer itself is frozen (it still signed the answer: every output goes to cold).
    assert "*" in rt.signer.status()["frozen"]
    assert alerts and alerts[0].thief_txid == theft.txid and alerts[0].outcome == "answered"
    assert {"freeze.applied", "shield.theft_detected", "shield.answered"} <= set(
        audit_actions(rt.db)
    )
    # The same events wait in the outbox for the payout engine's and on-call's webhooks.
    assert {"freeze.applied", "shield.theft_detected", "shield.answered"} <= outbox_types(rt)

    mine(rt)

    assert thief_received(rt) == 0
    (incident,) = incidents(rt)
    assert incident["status"] == "saved"
    assert incident["saved_sat"] == sweep.amount_sat > coin.amount_sat - incident["max_fee_sat"]
    assert incident["fees_spent_sat"] == answer.fee_sat
    assert incident["resolved_txid"] == answer.txid
    assert shield_freezes(rt), "a saved race does not lift the freeze"
    assert "shield.saved" in outbox_types(rt)
    # What reached the cold address is on chain, not only in our records.
    cold_utxos = chain.utxos_for_script(bytes.fromhex(sweep.script_pubkey))
    assert sum(u.amount_sat for u in cold_utxos.values()) == sweep.amount_sat


def test_a_thief_who_bumps_twice_is_answered_twice(guarded: Runtime) -> None:
    rt = guarded
    coin = a_hot_coin(rt)
    steal(rt, coin, fee_sat=300)
    watch(rt)
    chain = embedded(rt)
    for bump in (20_000, 400_000):  # each pays more than our last answer, as it must
        theft = steal(rt, coin, fee_sat=bump)
        assert watch(rt) == [theft.txid]
        assert theft.txid not in chain.mempool_txids()

    (incident,) = incidents(rt)
    rounds = incident["rounds"]
    assert [r["outcome"] for r in rounds] == ["answered"] * 3
    fees = [r["answer_fee_sat"] for r in rounds]
    assert fees == sorted(fees) and fees[2] > 400_000
    with rt.db.read() as uow:
        statuses = [uow.transactions.by_txid(r["answer_txid"]).status for r in rounds]  # type: ignore[union-attr]
    assert statuses == ["outbid", "outbid", "broadcast"]
    assert len(shield_freezes(rt)) == 1, "one incident, one freeze"

    mine(rt)

    assert thief_received(rt) == 0
    (incident,) = incidents(rt)
    assert incident["status"] == "saved" and incident["resolved_txid"] == rounds[2]["answer_txid"]
    assert incident["fees_spent_sat"] == fees[2]
    with rt.db.read() as uow:
        earlier = [uow.transactions.by_txid(r["answer_txid"]) for r in rounds[:2]]
        assert [tx.status for tx in earlier if tx] == ["dead", "dead"]


def test_a_theft_mined_first_is_reported_lost_and_the_freeze_holds(guarded: Runtime) -> None:
    rt = guarded
    coin = a_hot_coin(rt)
    theft = steal(rt, coin, fee_sat=500)
    watch(rt)
    # A miner who saw the thief's transaction first mines it anyway.
    mine(rt, [theft.raw])

    assert thief_received(rt) == coin.amount_sat - 500
    (incident,) = incidents(rt)
    assert incident["status"] == "lost"
    assert incident["lost_sat"] == coin.amount_sat and incident["saved_sat"] == 0
    assert incident["resolved_txid"] == theft.txid
    evidence = incident["evidence"]
    assert evidence["thief_txid"] == theft.txid
    assert evidence["thief_raw_tx"] == theft.raw.hex()
    assert evidence["block_height"] == incident["resolved_height"]
    assert shield_freezes(rt), "the freeze holds after a lost race"
    with rt.db.read() as uow:
        (answer,) = uow.session.scalars(
            select(ChainTransaction).where(ChainTransaction.kind == "shield")
        ).all()
        assert answer.status == "dead"
    assert "shield.lost" in audit_actions(rt.db)


def test_the_fee_budget_stops_the_rounds(guarded: Runtime) -> None:
    rt = guarded
    install(rt, default_document(shield={"max_fee_percent": 1}))  # 0.5 BTC of a 50 BTC coin
    coin = a_hot_coin(rt)
    steal(rt, coin, fee_sat=500)
    watch(rt)
    theft = steal(rt, coin, fee_sat=coin.amount_sat // 50)  # 1 BTC to the miners: above it

    assert watch(rt) == [theft.txid]

    (incident,) = incidents(rt)
    assert incident["max_fee_sat"] == coin.amount_sat // 100
    assert [r["outcome"] for r in incident["rounds"]] == ["answered", "cap_reached"]
    assert incident["cap_reached"] is True
    assert theft.txid in embedded(rt).mempool_txids(), "no answer above the budget"
    with rt.db.read() as uow:
        first = uow.transactions.by_txid(incident["rounds"][0]["answer_txid"])
        assert first is not None and first.status == "outbid"  # not re-broadcast every pass
    assert "shield.cap_reached" in audit_actions(rt.db)
    mine(rt)
    assert incidents(rt)[0]["status"] == "lost"


def test_everything_to_fees_outbids_a_thief_who_pays_more_than_half(guarded: Runtime) -> None:
    rt = guarded
    budget = install(rt, default_document(shield={"everything_to_fees": True}))
    # The signer holds answers to its own copy's budget: its operator installs it too.
    install_policy_in_signer(rt.settings, budget)
    coin = a_hot_coin(rt)
    steal(rt, coin, fee_sat=500)
    watch(rt)
    theft = steal(rt, coin, fee_sat=coin.amount_sat * 6 // 10)  # 60 % to the miners
    watch(rt)

    (incident,) = incidents(rt)
    assert [r["outcome"] for r in incident["rounds"]] == ["answered", "answered"]
    assert theft.txid not in embedded(rt).mempool_txids()
    mine(rt)
    assert thief_received(rt) == 0
    assert incidents(rt)[0]["status"] == "saved"


def test_notifications_of_the_same_theft_are_answered_once(guarded: Runtime) -> None:
    rt = guarded
    theft = steal(rt, a_hot_coin(rt), fee_sat=500)
    assert rt.mempool_watcher is not None
    rt.mempool_watcher._pushed(theft.txid)  # the node announces it twice (ZMQ + poll)
    watch(rt)
    assert len(incidents(rt)[0]["rounds"]) == 1
    assert len(shield_freezes(rt)) == 1


def test_our_own_transactions_are_not_thefts(guarded: Runtime) -> None:
    rt = guarded
    request_withdrawal(
        rt.db,
        rt.tags,
        body=WithdrawalInput(WALLET, external_destination("miner")[0], 1_000_000, "p1"),
        idempotency_key="p1",
        token_id="engine",
        actor="token:engine",
    )
    rt.tick()  # the worker signs and broadcasts the payout: it spends our coins
    assert len(embedded(rt).mempool_txids()) == 1
    assert watch(rt) == []
    assert incidents(rt) == [] and shield_freezes(rt) == []


def test_shield_incidents_are_readable_over_http(
    guarded: Runtime, client: TestClient, tokens: Tokens
) -> None:
    rt = guarded
    theft = steal(rt, a_hot_coin(rt), fee_sat=500)
    watch(rt)
    answer = client.get("/v1/shield/incidents", headers=auth(tokens.read_only))
    assert answer.status_code == 200, answer.text
    (incident,) = answer.json()["incidents"]
    assert incident["first_theft_txid"] == theft.txid and incident["status"] == "racing"
    assert incident["rounds"][0]["outcome"] == "answered"
    assert incident["stolen_sat"] > 0
    one = client.get(f"/v1/shield/incidents?wallet={WALLET}", headers=auth(tokens.read_only))
    assert one.json() == answer.json()
    missing = client.get("/v1/shield/incidents?wallet=nope", headers=auth(tokens.read_only))
    assert missing.status_code == 404


def test_the_shield_answer_is_broadcast_under_a_freeze_that_holds_payouts(
    guarded: Runtime,
) -> None:
    """The freeze (applied first) holds every payout; the answer is the one spend that leaves."""
    rt = guarded
    held = request_withdrawal(
        rt.db,
        rt.tags,
        body=WithdrawalInput(WALLET, external_destination("miner")[0], 1_000_000, "held"),
        idempotency_key="held",
        token_id="engine",
        actor="token:engine",
    )
    theft = steal(rt, a_hot_coin(rt), fee_sat=500)
    watch(rt)
    assert shield_freezes(rt)
    rt.tick()  # a full pass under the freeze: the worker signs and broadcasts nothing
    with rt.db.read() as uow:
        statuses = {tx.kind: tx.status for tx in uow.session.scalars(select(ChainTransaction))}
        payout = uow.withdrawals.get(held.withdrawal_id)
        assert payout is not None and payout.status == "approved"
    assert statuses == {"shield": "broadcast"}
    assert embedded(rt).mempool_txids() == {incidents(rt)[0]["rounds"][0]["answer_txid"]}
    assert theft.txid not in embedded(rt).mempool_txids()


@pytest.fixture
def team(runtime: Runtime) -> Team:
    team = Team(runtime)
    for name in ("alice", "bob"):
        team.add(name)
    team.add("otto", role="operator")
    return team


def old_coinbase_mined_at(runtime: Runtime, height: int) -> Coin:
    """The old-epoch (retired key) coinbase of the block at ``height``."""
    with runtime.db.read() as uow:
        wallet = uow.session.scalars(select(Wallet)).one()
        rows = uow.utxos.retired_epochs_with_addresses(
            wallet.id, wallet.current_epoch, voided_status="voided"
        )
        (row,) = [r for r in rows if r[0].is_coinbase and r[0].block_height == height]
        (coin,) = to_coins(uow, [row])
        return coin


def test_a_thief_spending_an_old_coinbase_at_maturity_is_answered(
    client: TestClient, guarded: Runtime, team: Team
) -> None:
    """After a rotation, the old key's coinbases mature one per block; the thief who has the
    old seed spends one the moment it matures, before the rotation pass can sweep it."""
    rt = guarded
    chain = embedded(rt)
    rotate_with_quorum(client, team, "hot seed may be exposed")
    rt.tick()  # the rotation sweeps the 11 mature old coinbases
    mine(rt)  # tip 111: the coinbase of height 12 matures
    rt.tick()  # ...and the rotation pass sweeps it at once
    mine(rt)  # tip 112: the coinbase of height 13 is spendable in the next block
    ripe = old_coinbase_mined_at(rt, 13)
    theft = steal(rt, ripe, fee_sat=1_000)  # the thief is first to it

    assert watch(rt) == [theft.txid]

    (incident,) = incidents(rt)
    assert incident["stolen"] == [f"{ripe.txid}:{ripe.vout}"]
    assert incident["rounds"][0]["outcome"] == "answered"
    answer_txid = incident["rounds"][0]["answer_txid"]
    assert theft.txid not in chain.mempool_txids() and answer_txid in chain.mempool_txids()
    rt.tick()  # the rotation pass leaves the coin to the shield's answer: no second spend
    mine(rt)
    assert thief_received(rt) == 0
    (incident,) = incidents(rt)
    assert incident["status"] == "saved" and incident["resolved_txid"] == answer_txid


def test_the_cli_reports_each_incident(guarded: Runtime) -> None:
    rt = guarded
    coin = a_hot_coin(rt)
    theft = steal(rt, coin, fee_sat=500)
    watch(rt)
    mine(rt)
    shown = run_cli(rt.settings, "shield", "--wallet", WALLET)
    assert shown.returncode == 0, shown.stderr
    (incident,) = json.loads(shown.stdout)["incidents"]
    assert incident == incidents(rt)[0]
    assert f"{coin.amount_sat} sat stolen by {theft.txid}, 1 round(s): SAVED" in shown.stderr
    assert f"for {incident['fees_spent_sat']} sat in fees" in shown.stderr


def test_after_a_rotation_the_frozen_wallet_serves_its_new_address_only(
    client: TestClient, guarded: Runtime, team: Team, tokens: Tokens
) -> None:
    """Under an ``all`` freeze the pool still needs the address to switch its coinbase to:
    the new key's, once a rotation made one; never the old key's, and nothing else opens."""
    current = f"/v1/wallets/{WALLET}/deposit-addresses/current"
    old = client.get(current, headers=auth(tokens.all)).json()["address"]
    frozen = client.post(
        "/v1/freeze", headers=auth(tokens.all), json={"reason": "stolen key", "scope": "all"}
    )
    assert frozen.status_code == 201
    refused = client.get(current, headers=auth(tokens.all))
    assert refused.status_code == 423 and refused.json()["error"]["code"] == "frozen"

    rotate_with_quorum(client, team, "hot seed stolen")

    served = client.get(current, headers=auth(tokens.all))
    assert served.status_code == 200, served.text
    assert served.json()["address"] != old
    assert served.json()["epoch"] == 2 and not served.json()["retired"]
    issuing = client.post(
        f"/v1/wallets/{WALLET}/deposit-addresses", headers=auth(tokens.all), json={}
    )
    assert issuing.status_code == 423
    payout = client.post(
        "/v1/withdrawals",
        headers=auth(tokens.all, "during"),
        json={"wallet": WALLET, "destination": THIEF_ADDRESS, "amount_sat": 10_000},
    )
    assert payout.status_code == 423


def test_over_bitcoin_core_rpc_the_watcher_polls_and_the_shield_answers(
    settings: Settings,
) -> None:
    """The Core path without ZMQ: getrawmempool polls, getmempoolentry and getrawtransaction
    read the theft, and the answer goes through testmempoolaccept and sendrawtransaction with
    its own maxfeerate (the node is the embedded chain behind its Core-style RPC server)."""
    initialised(settings)
    with rpc_node(settings) as (node, server):
        backend = BitcoinRpcBackend(
            server.url, Network.REGTEST, user=USER, password=PASSWORD, retries=0
        )
        with opened(settings, chain=backend) as rt:
            assert isinstance(rt.mempool_watcher, MempoolWatcher)
            assert isinstance(rt.mempool_watcher.source, CoreMempoolSource)
            with_cold(rt)
            with rt.db.read() as uow:
                deposit = current_address(uow, get_wallet(uow, WALLET))
            node.mine(110, bytes.fromhex(deposit.script_pubkey))
            rt.scanner.sync()
            theft = steal(rt, a_hot_coin(rt), fee_sat=500)  # sent to the node over RPC

            assert watch(rt) == [theft.txid]

            (incident,) = incidents(rt)
            answer_txid = incident["rounds"][0]["answer_txid"]
            assert node.mempool_txids() == {answer_txid}
            node.mine(1, POOL_SCRIPT)
            rt.scanner.sync()
            assert incidents(rt)[0]["status"] == "saved"
            assert not node.utxos_for_script(THIEF_SCRIPT)


def test_the_service_thread_answers_a_pushed_theft_by_itself(guarded: Runtime) -> None:
    """As `serve` runs it: the watcher's thread wakes on the chain's push. The test waits on
    the alert (a generous deadline, never a sleep); how fast is bench/bench_shield.py's."""
    rt = guarded
    assert rt.mempool_watcher is not None
    answered = threading.Event()
    rt.shield.alert_hooks.append(lambda alert: answered.set())
    rt.mempool_watcher.start(poll_interval_s=60.0)  # the push, not the poll, must wake it
    try:
        theft = steal(rt, a_hot_coin(rt), fee_sat=500)
        assert answered.wait(60.0), "the watcher thread never answered"
    finally:
        rt.mempool_watcher.stop()
    (incident,) = incidents(rt)
    assert incident["first_theft_txid"] == theft.txid
    assert embedded(rt).mempool_txids() == {incident["rounds"][0]["answer_txid"]}


def test_a_reorganisation_reopens_the_outcome(guarded: Runtime) -> None:
    """Saved in one block, then a longer branch where the thief's transaction is mined
    instead: the report follows the chain, not the first block it saw."""
    rt = guarded
    chain = embedded(rt)
    coin = a_hot_coin(rt)
    theft = steal(rt, coin, fee_sat=500)
    watch(rt)
    fork = chain.tip()
    mine(rt)
    assert incidents(rt)[0]["status"] == "saved"

    parent = fork.hash
    for txs in ([theft.raw], []):  # two blocks on the fork point: the longer branch wins
        raw = chain.build_block(parent, txs, coinbase_script_pubkey=POOL_SCRIPT)
        chain.submit_block(raw)  # the first only ties: not active yet
        parent = str(b2lx(CBlockHeader.deserialize(raw[:80]).GetHash()))
    assert chain.tip().hash == parent
    rt.scanner.sync()

    (incident,) = incidents(rt)
    assert incident["status"] == "lost"
    assert incident["resolved_txid"] == theft.txid
    assert incident["resolved_height"] == fork.height + 1
    assert incident["saved_sat"] == 0 and incident["lost_sat"] == coin.amount_sat
    assert "shield.reopened" in audit_actions(rt.db)
    assert thief_received(rt) == coin.amount_sat - 500


def test_a_reorganisation_gives_a_lost_race_a_second_chance(guarded: Runtime) -> None:
    rt = guarded
    chain = embedded(rt)
    theft = steal(rt, a_hot_coin(rt), fee_sat=500)
    watch(rt)
    fork = chain.tip()
    mine(rt, [theft.raw])  # a miner had the thief's transaction
    assert incidents(rt)[0]["status"] == "lost"

    parent = fork.hash
    for nonce in (1, 2):  # a longer branch without it
        raw = chain.build_block(parent, [], coinbase_script_pubkey=POOL_SCRIPT, extra_nonce=nonce)
        chain.submit_block(raw)
        parent = str(b2lx(CBlockHeader.deserialize(raw[:80]).GetHash()))
    rt.scanner.sync()
    (incident,) = incidents(rt)
    assert incident["status"] == "racing" and incident["evidence"] == {}

    answer_txid = incident["rounds"][0]["answer_txid"]
    assert rt.shield.rebroadcast() == [answer_txid]  # it replaces the resurrected theft
    assert theft.txid not in chain.mempool_txids()
    mine(rt)
    assert incidents(rt)[0]["status"] == "saved"
    assert thief_received(rt) == 0
