"""Batched payouts on a chain: one transaction, each payout once, fees shared to the
satoshi, the batch size and the batch wait honoured."""

from __future__ import annotations

from collections import Counter

from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import Tokens
from tests.helpers import (
    decode_tx,
    dev_chain,
    external_destination,
    request_payout,
    show_withdrawal,
)
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import ChainTransaction
from walletsvc.domain.money import DUST_LIMIT_SAT
from walletsvc.domain.sizes import MAX_STANDARD_TX_WEIGHT
from walletsvc.payouts.worker import split_fee


def _request(client: TestClient, token: str, n: int, tag: str) -> list[tuple[str, bytes, int]]:
    made = []
    for i in range(n):
        address, script = external_destination(f"{tag} miner {i}")
        amount = 600_000 + 1_001 * i  # distinct amounts: a swapped output would show
        response = request_payout(
            client, token, key=f"{tag}-{i}", destination=address, amount_sat=amount
        )
        assert response.status_code == 201 and response.json()["status"] == "approved"
        made.append((response.json()["id"], script, amount))
    return made


def test_forty_payouts_share_one_transaction(
    client: TestClient, funded: Runtime, tokens: Tokens
) -> None:
    chain = dev_chain(funded)
    payouts = _request(client, tokens.all, 40, "batch")
    report = funded.worker.run_once()
    assert len(report.signed_txids) == 1
    txid = report.signed_txids[0]
    chain.mine(1)
    funded.tick()

    views = [show_withdrawal(client, tokens.all, wid) for wid, _, _ in payouts]
    assert {v["status"] for v in views} == {"confirmed"}
    assert {v["txid"] for v in views} == {txid}
    tx = decode_tx(views[0]["raw_tx"])
    outputs = Counter((bytes(o.scriptPubKey), int(o.nValue)) for o in tx.vout)
    for _, script, amount in payouts:
        assert outputs[(script, amount)] == 1  # each payout exactly once
    assert len(tx.vout) == len(payouts) + 1  # and the change
    assert all(int(o.nValue) >= DUST_LIMIT_SAT for o in tx.vout)
    with funded.db.read() as s:
        stored = s.scalars(select(ChainTransaction)).one()
    assert stored.vsize * 4 <= MAX_STANDARD_TX_WEIGHT
    shares = [v["fee_sat"] for v in views]
    assert sum(shares) == stored.fee_sat == views[0]["transaction_fee_sat"]
    # In request order, the first payout carries the remainder: exact to the satoshi.
    assert shares == split_fee(stored.fee_sat, len(payouts))


def test_max_batch_outputs_splits_into_several_transactions(
    client: TestClient, funded: Runtime, tokens: Tokens
) -> None:
    funded.settings.max_batch_outputs = 4
    payouts = _request(client, tokens.all, 10, "split")
    signed: list[str] = []
    for _ in range(3):
        signed.extend(funded.worker.run_once().signed_txids)
        dev_chain(funded).mine(1)  # the change confirms, so the next batch may spend it
        funded.scanner.sync()
    assert len(signed) == 3
    by_tx = Counter(show_withdrawal(client, tokens.all, wid)["txid"] for wid, _, _ in payouts)
    assert sorted(by_tx.values()) == [2, 4, 4]


def test_batch_waits_for_a_full_batch_or_its_deadline(
    client: TestClient, funded: Runtime, tokens: Tokens
) -> None:
    funded.settings.max_batch_outputs = 5
    funded.settings.batch_max_wait_s = 3_600
    _request(client, tokens.all, 3, "wait")
    assert funded.worker.run_once().signed_txids == []  # 3 of 5, and not waited long enough
    _request(client, tokens.all, 2, "fill")
    first = funded.worker.run_once().signed_txids
    assert len(first) == 1  # full: goes at once
    dev_chain(funded).mine(1)
    funded.scanner.sync()
    _request(client, tokens.all, 1, "late")
    assert funded.worker.run_once().signed_txids == []
    funded.settings.batch_max_wait_s = 0.001  # the deadline has passed: a partial batch goes
    assert len(funded.worker.run_once().signed_txids) == 1
