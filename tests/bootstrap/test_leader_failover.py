"""Several service processes on one database: exactly one runs the worker (the leader lease),
and when the active worker's process is killed (kill -9) mid-run another takes over, with
nothing paid twice and nothing lost.

Two real `walletsvc serve` processes share the test's database and reach the chain over
JSON-RPC (the Core-shaped server in front of an embedded chain, on loopback). The test waits
on observable conditions (audit events, rows, the node's mempool) under generous deadlines,
never on pauses.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from bitcoin.core import CTransaction
from sqlalchemy import select

from tests.chainsync.test_rpc_backend_service import PASSWORD, USER, rpc_node
from tests.conftest import WALLET
from tests.helpers import audit_events, external_destination, initialised, service_env
from walletsvc.bootstrap.runtime import open_database
from walletsvc.config import Settings
from walletsvc.db.database import Database
from walletsvc.db.models import ChainTransaction, Withdrawal
from walletsvc.devchain.embedded import EmbeddedChain
from walletsvc.governance.audit import verify
from walletsvc.keys.kek import load_kek
from walletsvc.payouts.intake import WithdrawalInput, request_withdrawal
from walletsvc.wallets.service import current_address, get_wallet

pytestmark = pytest.mark.kernel

REPO = Path(__file__).resolve().parents[2]
PAYOUTS = 12
LATE_PAYOUTS = 6
DEADLINE_S = 180  # generous: two service processes share a loaded 2-core machine


def _wait_until(condition: Callable[[], bool], what: str) -> None:
    pause = threading.Event()
    for _ in range(DEADLINE_S * 20):
        if condition():
            return
        pause.wait(0.05)  # polling interval only: the condition decides, not the clock
    raise AssertionError(f"never happened within {DEADLINE_S} s: {what}")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def _service_processes(
    settings: Settings, rpc_url: str, count: int, logs: Path
) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes = []
    for n in range(count):
        env = service_env(
            settings,
            WALLETSVC_CHAIN_BACKEND="rpc",
            WALLETSVC_RPC_URL=rpc_url,
            WALLETSVC_RPC_USER=USER,
            WALLETSVC_RPC_PASSWORD=PASSWORD,
            WALLETSVC_RUN_WORKER="true",
            WALLETSVC_WORKER_INTERVAL_S="0.05",
            WALLETSVC_MAX_BATCH_OUTPUTS="2",
            WALLETSVC_LEADER_LEASE_TTL_S="3",
            WALLETSVC_PORT=str(_free_port()),
        )
        log = (logs / f"service-{n}.log").open("wb")
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "walletsvc.cli.main", "serve"],
                env=env,
                cwd=REPO,
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:
        yield processes
    finally:
        for process in processes:
            if process.poll() is None:
                process.terminate()
        for process in processes:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _leader_pids(db: Database) -> list[int]:
    return [int(e.data["pid"]) for e in audit_events(db, "worker.leader_taken")]


def _withdrawals(db: Database) -> list[Withdrawal]:
    with db.read() as uow:
        return list(uow.session.scalars(select(Withdrawal)))


def _signed_count(db: Database) -> int:
    with db.read() as uow:
        return len(list(uow.session.scalars(select(ChainTransaction.id))))


def _queue_payouts(settings: Settings, db: Database, numbers: range) -> dict[bytes, str]:
    tags = load_kek(settings.kek_path).row_tagger()
    scripts = {}
    for i in numbers:
        address, script = external_destination(f"failover miner {i}")
        request_withdrawal(
            db,
            tags,
            body=WithdrawalInput(WALLET, address, 100_000 + i, f"failover-{i}"),
            idempotency_key=f"failover-{i}",
            token_id="payout-engine",
            actor="test",
        )
        scripts[script] = address
    return scripts


def _paid_in_mempool(node: EmbeddedChain, scripts: dict[bytes, str]) -> Counter[bytes]:
    paid: Counter[bytes] = Counter()
    for txid in node.mempool_txids():
        raw = node.get_transaction(txid)
        assert raw is not None
        for out in CTransaction.deserialize(raw).vout:
            if bytes(out.scriptPubKey) in scripts:
                paid[bytes(out.scriptPubKey)] += 1
    return paid


def test_killing_the_active_worker_hands_over_without_paying_twice(
    settings: Settings, tmp_path: Path
) -> None:
    initialised(settings)
    db = open_database(settings)
    try:
        with rpc_node(settings) as (node, server):
            with db.read() as uow:
                deposit = current_address(uow, get_wallet(uow, WALLET))
            # Twenty mature coinbase coins: one per batch, with change still unconfirmed.
            node.mine(120, bytes.fromhex(deposit.script_pubkey))
            scripts = _queue_payouts(settings, db, range(PAYOUTS))
            with _service_processes(settings, server.url, 2, tmp_path) as processes:
                by_pid = {p.pid: p for p in processes}
                _wait_until(lambda: bool(_leader_pids(db)), "a worker took the lease")
                first = _leader_pids(db)[0]
                assert first in by_pid
                # Mid-run: the leader has signed a batch, and more are waiting.
                _wait_until(lambda: _signed_count(db) >= 1, "the leader signed a batch")
                os.kill(first, signal.SIGKILL)
                by_pid[first].wait(timeout=DEADLINE_S)
                # Work only the next leader can do, whatever the first finished before dying.
                scripts |= _queue_payouts(settings, db, range(PAYOUTS, PAYOUTS + LATE_PAYOUTS))

                _wait_until(
                    lambda: any(pid != first for pid in _leader_pids(db)),
                    "the other process took over",
                )
                # Exactly one active worker at a time: the second process led only after the
                # first died.
                (second,) = {pid for pid in _leader_pids(db) if pid != first}
                assert _leader_pids(db) == [first, second]
                assert second in by_pid and by_pid[second].poll() is None
                _wait_until(
                    lambda: all(w.status == "broadcast" for w in _withdrawals(db)),
                    "every payout broadcast",
                )
                # Nothing lost, nothing paid twice: each payout in exactly one transaction,
                # each destination paid exactly once among the node's transactions.
                withdrawals = _withdrawals(db)
                assert len(withdrawals) == PAYOUTS + LATE_PAYOUTS
                paid = _paid_in_mempool(node, scripts)
                assert paid == Counter(dict.fromkeys(scripts, 1))
                with db.read() as uow:
                    txs = list(uow.session.scalars(select(ChainTransaction)))
                    assert {t.txid for t in txs} <= node.mempool_txids()
                    assert {w.transaction_id for w in withdrawals} == {t.id for t in txs}
                    assert all(t.status == "broadcast" for t in txs)
                    report = verify(uow, load_kek(settings.kek_path).row_tagger(), db.audit_key)
                assert report.ok, report.problems
    finally:
        db.dispose()
