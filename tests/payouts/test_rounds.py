"""Payout rounds through the worker: a round of thousands is batched into as few standard
transactions as the weight limit, the output cap and the fee cap allow; every payout is paid
exactly once, and the round's view follows its payouts to the chain.

The policy here lets every payout through (limits far above the rounds), so the subject is
the batching, not the decision (tests/api/test_payout_rounds.py covers that).
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bitcoin.core import CMutableTransaction, CTransaction, CTxWitness
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import REPO, RUNNING_SIGNERS, WALLET, Tokens, auth, fund_wallet
from tests.helpers import (
    dev_chain,
    embedded,
    external_destination,
    initialised,
    opened,
    service_env,
)
from tests.payouts.crash_worker import CRASH_AFTER_SIGN, CRASH_EXIT
from walletsvc.api.app import create_app
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.config import Settings
from walletsvc.db.models import ChainTransaction
from walletsvc.domain.address import script_to_address
from walletsvc.domain.network import Network
from walletsvc.domain.sizes import MAX_STANDARD_TX_WEIGHT
from walletsvc.signer.server import SignerServer

SUPPLY = 2_100_000_000_000_000
PERMISSIVE_POLICY = f"""\
version: 1
max_per_payout_sat: {SUPPLY}
velocity:
  - {{id: wallet-24h, window: 24h, scope: wallet, max_amount_sat: {SUPPLY}}}
  - {{id: destination-24h, window: 24h, scope: destination, max_amount_sat: {SUPPLY}}}
  - {{id: token-1h, window: 1h, scope: token, max_amount_sat: {SUPPLY}}}
allowlist:
  required: false
approval_tiers: []
governance:
  allowlist_add: {{group: treasury, m: 2}}
  policy_change: {{group: treasury, m: 2}}
  unfreeze: {{group: treasury, m: 2}}
  key_rotation: {{group: treasury, m: 2}}
  cold_destination_change: {{group: treasury, m: 2}}
"""
ROUNDS = "/v1/payout-rounds"


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Iterator[Settings]:
    """The permissive policy, in the service and in its signer (tests.conftest's fixture)."""
    policy = tmp_path / "permissive.yaml"
    policy.write_text(PERMISSIVE_POLICY)
    s = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        kek_file=tmp_path / "data" / "kek.bin",
        policy_file=policy,
        run_worker=False,
    )
    with SignerServer(s) as signer:
        RUNNING_SIGNERS[s.signer_path] = signer
        yield s
    RUNNING_SIGNERS.pop(s.signer_path, None)


def p2wsh_destination(tag: str) -> tuple[str, bytes]:
    """A 43-byte output script (172 weight units per output): heavier than P2WPKH."""
    script = b"\x00\x20" + hashlib.sha256(tag.encode()).digest()
    return script_to_address(script, Network.REGTEST), script


def post_round(client: TestClient, token: str, destinations: list[str], key: str) -> dict[str, Any]:
    body = {
        "wallet": WALLET,
        "reference": key,
        "payouts": [
            {"destination": d, "amount_sat": 10_000 + i} for i, d in enumerate(destinations)
        ],
    }
    response = client.post(ROUNDS, json=body, headers=auth(token, key))
    assert response.status_code == 201, response.text[:500]
    view: dict[str, Any] = response.json()
    assert view["counts"] == {"approved": len(destinations)}
    return view


def weight(raw_hex: str) -> int:
    tx = CTransaction.deserialize(bytes.fromhex(raw_hex))
    stripped = CMutableTransaction.from_tx(tx)
    stripped.wit = CTxWitness()
    return 3 * len(stripped.serialize()) + len(tx.serialize())


def paid_outputs(runtime: Runtime) -> tuple[Counter[tuple[bytes, int]], dict[str, str]]:
    """Every output of our stored payout transactions, and txid -> raw hex."""
    with runtime.db.read() as uow:
        txs = {t.txid: t.raw_tx for t in uow.session.scalars(select(ChainTransaction))}
    outputs: Counter[tuple[bytes, int]] = Counter()
    for raw in txs.values():
        tx = CTransaction.deserialize(bytes.fromhex(raw))
        outputs.update((bytes(o.scriptPubKey), int(o.nValue)) for o in tx.vout)
    return outputs, txs


def test_a_round_heavier_than_one_standard_transaction_is_split_by_weight(
    client: TestClient, funded: Runtime, tokens: Tokens
) -> None:
    # 2,400 P2WSH payouts weigh 412,800 WU in outputs alone: no single standard transaction
    # holds them. Output cap and fee cap are out of the way, so the weight decides the split.
    funded.settings.max_batch_outputs = 5_000
    funded.settings.max_fee_sat = 5_000_000
    made = [p2wsh_destination(f"wide miner {i}") for i in range(2_400)]
    view = post_round(client, tokens.all, [a for a, _ in made], "wide-round")

    signed = []
    for _ in range(3):
        signed += funded.worker.run_once().signed_txids
        dev_chain(funded).mine(1)  # the change confirms, so the next batch may spend it
        funded.scanner.sync()
    assert len(signed) == 2, "as few transactions as standardness allows"

    outputs, txs = paid_outputs(funded)
    assert set(txs) == set(signed)
    for raw in txs.values():
        assert weight(raw) <= MAX_STANDARD_TX_WEIGHT
    for i, (_, script) in enumerate(made):
        assert outputs[(script, 10_000 + i)] == 1  # each payout exactly once

    shown = client.get(f"{ROUNDS}/{view['id']}", headers=auth(tokens.all)).json()
    assert shown["counts"] == {"confirmed": 2_400}
    by_txid = Counter(p["txid"] for p in shown["payouts"])
    assert set(by_txid) == set(signed)
    # The first transaction carries the longest leading part of the round that fits.
    first = [p["txid"] for p in shown["payouts"]].index(signed[1])
    assert by_txid[signed[0]] == first > 2_200


def test_a_round_above_the_fee_cap_is_split_under_it(
    client: TestClient, funded: Runtime, tokens: Tokens
) -> None:
    funded.settings.max_fee_sat = 50_000  # at 2 sat/vB: about 800 P2WPKH outputs
    made = [external_destination(f"capped miner {i}") for i in range(1_000)]
    view = post_round(client, tokens.all, [a for a, _ in made], "capped-round")
    first = funded.worker.run_once()
    assert len(first.signed_txids) == 1 and first.broadcast_txids == first.signed_txids
    progress = client.get(f"{ROUNDS}/{view['id']}", headers=auth(tokens.all)).json()
    assert set(progress["counts"]) == {"broadcast", "approved"}
    assert 0 < progress["counts"]["approved"] < 1_000
    second = funded.worker.run_once()
    assert len(second.signed_txids) == 1
    outputs, _ = paid_outputs(funded)
    with funded.db.read() as uow:
        fees = [t.fee_sat for t in uow.session.scalars(select(ChainTransaction))]
    assert len(fees) == 2 and all(fee <= 50_000 for fee in fees)
    for i, (_, script) in enumerate(made):
        assert outputs[(script, 10_000 + i)] == 1
    done = client.get(f"{ROUNDS}/{view['id']}", headers=auth(tokens.all)).json()
    assert done["counts"] == {"broadcast": 1_000}


@pytest.mark.kernel
def test_a_2000_payout_round_is_paid_in_standard_transactions_the_kernel_accepts(
    client: TestClient, funded: Runtime, tokens: Tokens
) -> None:
    funded.settings.max_batch_outputs = 1_000  # the output cap: two transactions
    chain = embedded(funded)
    made = [external_destination(f"kernel round miner {i}") for i in range(2_000)]
    view = post_round(client, tokens.all, [a for a, _ in made], "kernel-round")
    signed = []
    for _ in range(2):
        report = funded.worker.run_once()
        assert report.errors == [] and report.broadcast_txids == report.signed_txids
        signed += report.signed_txids
    assert len(signed) == 2
    assert chain.mempool_txids() == set(signed)  # the embedded chain's kernel accepted both
    chain.mine(1)
    funded.tick()
    outputs: Counter[tuple[bytes, int]] = Counter()
    for txid in signed:
        assert chain.confirmations(txid) == 1
        raw = chain.get_transaction(txid)
        assert raw is not None
        assert weight(raw.hex()) <= MAX_STANDARD_TX_WEIGHT
        tx = CTransaction.deserialize(raw)
        outputs.update((bytes(o.scriptPubKey), int(o.nValue)) for o in tx.vout)
    for i, (_, script) in enumerate(made):
        assert outputs[(script, 10_000 + i)] == 1
    shown = client.get(f"{ROUNDS}/{view['id']}", headers=auth(tokens.all)).json()
    assert shown["counts"] == {"confirmed": 2_000}
    assert Counter(p["txid"] for p in shown["payouts"]) == {signed[0]: 1_000, signed[1]: 1_000}


@pytest.mark.kernel
def test_a_worker_killed_between_signing_and_broadcast_pays_each_round_payout_once(
    settings: Settings,
) -> None:
    token = initialised(settings)
    made = [external_destination(f"crash round miner {i}") for i in range(30)]
    with opened(settings) as runtime:
        fund_wallet(runtime)
        with TestClient(create_app(settings, runtime=runtime)) as client:
            view = post_round(client, token, [a for a, _ in made], "crash-round")

    # The first worker signs a batch of 20 (the output cap), commits it and dies.
    crashed = subprocess.run(
        [sys.executable, "-m", "tests.payouts.crash_worker", CRASH_AFTER_SIGN],
        cwd=REPO,
        env=service_env(settings, WALLETSVC_RUN_WORKER="false", WALLETSVC_MAX_BATCH_OUTPUTS="20"),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert crashed.returncode == CRASH_EXIT, (crashed.stdout, crashed.stderr)

    with opened(settings) as runtime:
        runtime.settings.max_batch_outputs = 20
        chain = embedded(runtime)
        with runtime.db.read() as uow:
            stored = uow.session.scalars(select(ChainTransaction)).one()
        assert stored.status == "signed" and chain.mempool_txids() == set()
        # The restarted worker re-sends the same bytes and signs only the 10 left.
        report = runtime.worker.run_once()
        assert stored.txid in report.broadcast_txids
        assert len(report.signed_txids) == 1 and stored.txid not in report.signed_txids
        assert chain.get_transaction(stored.txid) == bytes.fromhex(stored.raw_tx)
        again = runtime.worker.run_once()
        assert again.signed_txids == [] and again.broadcast_txids == []
        chain.mine(1)
        runtime.tick()
        outputs, txs = paid_outputs(runtime)
        assert len(txs) == 2
        for i, (_, script) in enumerate(made):
            assert outputs[(script, 10_000 + i)] == 1  # paid once, never twice
        with TestClient(create_app(settings, runtime=runtime)) as client:
            shown = client.get(f"{ROUNDS}/{view['id']}", headers=auth(token)).json()
        assert shown["counts"] == {"confirmed": 30}
