"""A worker process that really dies between storing and broadcasting its signed transaction.

The first worker runs in a subprocess (tests.payouts.crash_worker) whose broadcast step is
patched to kill it: it signs, commits the signed transaction and exits with status 86 before
broadcasting. A worker restarted in this process must broadcast the very same bytes and never
sign again.
"""

from __future__ import annotations

import subprocess
import sys

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from tests.conftest import REPO, WALLET, auth, fund_wallet
from tests.helpers import (
    audit_events,
    count_rows,
    embedded,
    external_destination,
    initialised,
    opened,
    request_payout,
    service_env,
    show_withdrawal,
)
from tests.payouts.crash_worker import CRASH_AFTER_SIGN, CRASH_EXIT
from walletsvc.api.app import create_app
from walletsvc.config import Settings
from walletsvc.db.models import ChainTransaction, Utxo, Withdrawal

pytestmark = pytest.mark.kernel


def run_worker_process(settings: Settings, *, crash: bool) -> subprocess.CompletedProcess[str]:
    env = service_env(settings, WALLETSVC_RUN_WORKER="false")
    hook = [CRASH_AFTER_SIGN] if crash else []
    return subprocess.run(
        [sys.executable, "-m", "tests.payouts.crash_worker", *hook],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def test_restarted_worker_broadcasts_the_same_transaction(settings: Settings) -> None:
    destination, dest_script = external_destination("crash miner")
    token = initialised(settings)
    with opened(settings) as runtime:
        fund_wallet(runtime)
        with TestClient(create_app(settings, runtime=runtime)) as client:
            created = request_payout(client, token, key="crash-1", destination=destination)
        assert created.status_code == 201, created.text
        withdrawal_id = created.json()["id"]
        tip_before = runtime.chain.tip()

    # 1. The first worker dies right after committing the signed transaction.
    crashed = run_worker_process(settings, crash=True)
    assert crashed.returncode == CRASH_EXIT, (crashed.stdout, crashed.stderr)
    assert "survived" not in crashed.stdout

    with opened(settings) as runtime:
        chain = embedded(runtime)
        assert chain.tip() == tip_before
        with runtime.db.read() as session:
            withdrawal = session.get(Withdrawal, withdrawal_id)
            assert withdrawal is not None
            stored = session.scalars(select(ChainTransaction)).one()
            reserved = list(session.scalars(select(Utxo).where(Utxo.reserved_by == stored.id)))
        assert withdrawal.status == "signed"
        assert withdrawal.transaction_id == stored.id
        assert stored.status == "signed" and stored.broadcast_attempts == 0
        assert reserved, "the signed transaction's inputs are reserved"
        signed_raw, txid = stored.raw_tx, stored.txid
        # Nothing left the process: the chain has never seen the transaction.
        assert txid not in chain.mempool_txids()
        assert chain.get_transaction(txid) is None

        # 2. The restarted worker (here, in the test process) re-broadcasts the same bytes.
        report = runtime.worker.run_once()
        assert report.signed_txids == []
        assert report.broadcast_txids == [txid]
        assert chain.mempool_txids() == {txid}
        assert chain.get_transaction(txid) == bytes.fromhex(signed_raw)
        again = runtime.worker.run_once()  # and another pass signs nothing either
        assert again.signed_txids == [] and again.broadcast_txids == []
        assert count_rows(runtime.db, ChainTransaction) == {"chain_transactions": 1}
        with runtime.db.read() as session:
            after = session.scalars(select(ChainTransaction)).one()
        assert (after.txid, after.raw_tx, after.status) == (txid, signed_raw, "broadcast")
        assert len(audit_events(runtime.db, "transaction.signed")) == 1

        # 3. Mined and confirmed, with the stored transaction.
        chain.mine(1)
        runtime.tick()
        with TestClient(create_app(settings, runtime=runtime)) as client:
            view = show_withdrawal(client, token, withdrawal_id)
            assert client.get(f"/v1/wallets/{WALLET}", headers=auth(token)).status_code == 200
        assert view["status"] == "confirmed"
        assert view["txid"] == txid and view["raw_tx"] == signed_raw
        assert view["confirmations"] == 1
        assert chain.confirmations(txid) == 1
        assert dest_script.hex() in signed_raw
        assert count_rows(runtime.db, ChainTransaction) == {"chain_transactions": 1}


def test_worker_without_the_crash_hook_signs_and_broadcasts_in_one_pass(
    settings: Settings,
) -> None:
    """The control experiment: the same subprocess without the crash hook broadcasts."""
    destination, _ = external_destination("control miner")
    token = initialised(settings)
    with opened(settings) as runtime:
        fund_wallet(runtime)
        with TestClient(create_app(settings, runtime=runtime)) as client:
            created = request_payout(client, token, key="control-1", destination=destination)
        assert created.status_code == 201

    finished = run_worker_process(settings, crash=False)
    assert finished.returncode == 0, finished.stderr
    assert "survived" in finished.stdout

    with opened(settings) as runtime:
        with runtime.db.read() as session:
            stored = session.scalars(select(ChainTransaction)).one()
        assert stored.status == "broadcast"
        # The subprocess's broadcast reached the chain's persisted mempool.
        assert stored.txid in embedded(runtime).mempool_txids()
