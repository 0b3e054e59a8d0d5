"""Small helpers shared by the service, API and DB tests (no fixtures here; see conftest.py).

Everything talks to real parts: HTTP through FastAPI's TestClient or a live uvicorn on
loopback, the database through the runtime's engine. The chain is the in-memory fake
(tests.fakechain) or, for tests marked ``kernel``, the embedded kernel chain.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from bitcoin.core import CTransaction, b2lx
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import DeclarativeBase

from tests.conftest import WALLET, auth
from tests.fakechain import FakeChain
from walletsvc.bootstrap.runtime import Runtime, open_database
from walletsvc.bootstrap.setup import initialise
from walletsvc.config import Settings
from walletsvc.db.database import Database
from walletsvc.db.models import (
    AuditEvent,
    ChainTransaction,
    IdempotencyKey,
    Utxo,
    Withdrawal,
)
from walletsvc.devchain.embedded import EmbeddedChain
from walletsvc.devchain.service import open_dev_chain
from walletsvc.domain.address import p2wpkh_script, script_to_address
from walletsvc.domain.network import Network
from walletsvc.domain.ports import ChainBackend
from walletsvc.governance.audit import VerifyReport, verify
from walletsvc.governance.tokens import SCOPES, create_token
from walletsvc.keys.kek import load_kek

# The default policy sends anything above 0.1 BTC to staff approval: stay below it.
PAYOUT_SAT = 1_234_567


def external_destination(tag: str, network: Network = Network.REGTEST) -> tuple[str, bytes]:
    """A P2WPKH address that is not ours (a miner's), and its output script."""
    key_hash = hashlib.new("ripemd160", hashlib.sha256(tag.encode()).digest()).digest()
    script = p2wpkh_script(key_hash)
    return script_to_address(script, network), script


@contextmanager
def opened(settings: Settings, *, chain: ChainBackend | None = None) -> Iterator[Runtime]:
    """A Runtime of its own (not the ``runtime`` fixture), closed on exit.

    Without ``chain`` it opens the real embedded chain in ``settings.chain_dir``.
    """
    runtime = Runtime.open(settings, chain=chain or open_dev_chain(settings))
    try:
        yield runtime
    finally:
        runtime.close()


def initialised(settings: Settings) -> str:
    """Run ``walletsvc init`` for the test wallet and create an all-scopes API token."""
    initialise(settings, wallet=WALLET, policy_file=settings.policy_file, actor="test")
    db = open_database(settings)  # a token needs no chain
    try:
        tags = load_kek(settings.kek_path).row_tagger()
        return create_token(db, tags, name="engine", scopes=sorted(SCOPES), actor="test").secret
    finally:
        db.dispose()


def embedded(runtime: Runtime) -> EmbeddedChain:
    """The real embedded chain (tests marked ``kernel``)."""
    chain = runtime.chain
    assert isinstance(chain, EmbeddedChain)
    return chain


def dev_chain(runtime: Runtime) -> EmbeddedChain | FakeChain:
    """The runtime's chain where a test only mines and reads: the fake or the kernel chain."""
    chain = runtime.chain
    assert isinstance(chain, EmbeddedChain | FakeChain)
    return chain


# -- database ------------------------------------------------------------------------------

GUARDED_TABLES: tuple[type[DeclarativeBase], ...] = (
    Withdrawal,
    IdempotencyKey,
    ChainTransaction,
)


def count_rows(db: Database, *models: type[DeclarativeBase]) -> dict[str, int]:
    """Row counts per table name, read in one transaction."""
    with db.read() as uow:
        session = uow.session
        return {
            m.__tablename__: int(session.scalar(select(func.count()).select_from(m)) or 0)
            for m in (models or GUARDED_TABLES)
        }


def audit_events(db: Database, action: str | None = None) -> list[AuditEvent]:
    with db.read() as uow:
        session = uow.session
        query = select(AuditEvent).order_by(AuditEvent.seq)
        if action is not None:
            query = query.where(AuditEvent.action == action)
        return list(session.scalars(query))


def audit_actions(db: Database) -> list[str]:
    return [ev.action for ev in audit_events(db)]


def verify_audit(runtime: Runtime) -> VerifyReport:
    """What `walletsvc audit verify` reports: the chain, the rows, and the signer's anchors."""
    anchors = runtime.signer.audit_anchors()
    with runtime.db.read() as uow:
        return verify(uow, runtime.tags, runtime.db.audit_key, anchors=anchors)


def utxo_keys(db: Database) -> list[tuple[str, int]]:
    with db.read() as uow:
        session = uow.session
        return sorted((u.txid, u.vout) for u in session.scalars(select(Utxo)))


def chain_tx_for(db: Database, withdrawal_id: str) -> ChainTransaction | None:
    with db.read() as uow:
        session = uow.session
        row = session.get(Withdrawal, withdrawal_id)
        assert row is not None
        return session.get(ChainTransaction, row.transaction_id) if row.transaction_id else None


# -- HTTP ----------------------------------------------------------------------------------


def request_payout(
    client: TestClient | httpx.Client,
    token: str,
    *,
    key: str,
    destination: str,
    amount_sat: int = PAYOUT_SAT,
    wallet: str = WALLET,
    reference: str | None = None,
) -> httpx.Response:
    body: dict[str, Any] = {"wallet": wallet, "destination": destination, "amount_sat": amount_sat}
    if reference is not None:
        body["reference"] = reference
    return client.post("/v1/withdrawals", headers=auth(token, key), json=body)


def show_withdrawal(client: TestClient, token: str, withdrawal_id: str) -> dict[str, Any]:
    response = client.get(f"/v1/withdrawals/{withdrawal_id}", headers=auth(token))
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def wallet_balances(client: TestClient, token: str, wallet: str = WALLET) -> dict[str, int]:
    response = client.get(f"/v1/wallets/{wallet}", headers=auth(token))
    assert response.status_code == 200, response.text
    balances: dict[str, int] = response.json()["balances"]
    return balances


# -- transactions --------------------------------------------------------------------------


def decode_tx(raw_hex: str) -> CTransaction:
    return CTransaction.deserialize(bytes.fromhex(raw_hex))


def txid_of(tx: CTransaction) -> str:
    return str(b2lx(tx.GetTxid()))


def prevout_amount(chain: EmbeddedChain, txid: str, vout: int) -> int:
    """The amount of output ``txid:vout`` as the chain has it (read from the raw funding tx)."""
    raw = chain.get_transaction(txid)
    assert raw is not None, f"the chain does not know {txid}"
    return int(CTransaction.deserialize(raw).vout[vout].nValue)


# -- a live API server ---------------------------------------------------------------------


class LiveServer:
    """uvicorn serving ``app`` on 127.0.0.1 (a free port) in a thread, lifespan included."""

    def __init__(self, app: FastAPI) -> None:
        config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning")
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, name="api-server", daemon=True)
        self.port = 0

    def start(self, timeout_s: float = 15.0) -> LiveServer:
        self._thread.start()
        deadline = time.monotonic() + timeout_s
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the API server did not start")
            time.sleep(0.01)
        self.port = int(self._server.servers[0].sockets[0].getsockname()[1])
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=15)


@contextmanager
def live_server(app: FastAPI) -> Iterator[LiveServer]:
    server = LiveServer(app).start()
    try:
        yield server
    finally:
        server.stop()


REPO = Path(__file__).resolve().parents[1]


def service_env(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment of a separate `walletsvc` process acting on ``settings``' data."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith("WALLETSVC_")},
        "WALLETSVC_DATA_DIR": str(settings.data_dir),
        "WALLETSVC_DATABASE_URL": settings.database_url,
        "WALLETSVC_KEK_FILE": str(settings.kek_path),
        "WALLETSVC_POLICY_FILE": str(settings.policy_file),
        **extra,
    }


def run_cli(
    settings: Settings, *args: str, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    """Run `walletsvc ARGS` in its own process, as an operator would (no API involved)."""
    return subprocess.run(
        [sys.executable, "-m", "walletsvc.cli.main", *args],
        env=service_env(settings),
        cwd=REPO,
        input=stdin,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


# A bound on waiting for an observable condition, never a pause standing in for one.
DEADLINE_S = 120


def wait_until(condition: Callable[[], bool], what: str) -> None:
    """Return once ``condition()`` holds (polled every 10 ms); fail after ``DEADLINE_S``."""
    pause = threading.Event()
    for _ in range(DEADLINE_S * 100):
        if condition():
            return
        pause.wait(0.01)
    raise AssertionError(f"never happened: {what}")
