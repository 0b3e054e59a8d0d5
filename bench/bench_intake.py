"""Intake at pool scale: POST /v1/withdrawals over real HTTP against a minimal baseline app.

Run: ``make bench`` (after the signing bench), or alone::

    .venv/bin/python bench/bench_intake.py [--quick] [--backend sqlite|postgresql|both]
        [--only intake,history,freeze,scanner,round] [--profile SECONDS]

By default one database kind is measured: PostgreSQL when its URL is set (production's
database, the issue's headline targets), else SQLite; ``--backend both`` measures both and
takes about twice as long.

What it measures (figures and how to read them: docs/performance.md, "Intake"):

1. walletsvc served by ``walletsvc serve`` in a subprocess on 127.0.0.1 (worker off, a
   permissive policy, embedded regtest chain, fresh data dir and database), driven with
   distinct Idempotency-Keys by N client threads at concurrency 1, 16 and 64; beside it the
   **baseline**, a minimal FastAPI app (below) doing one INSERT + COMMIT per request into a
   one-table schema on the same kind of database, served and driven identically.
2. The same with payout history already in the database (payouts inside the 24 h velocity
   window, and older rows outside it), inserted directly in bulk.
3. POST /v1/freeze latency, idle and while 64 clients post payouts.
4. The chain scanner's time for one block paying 1,000 of our outputs, with the wallet's
   initial watched addresses and with 100,000.
5. A payout round of 2,000 payouts: POST /v1/payout-rounds until its answer (beside it, the
   same payouts as single POST /v1/withdrawals, sequentially: a sample, extrapolated), then
   the worker's pass that signs and broadcasts it.

PostgreSQL runs in a fresh database on the server named by WALLETSVC_BENCH_POSTGRES_URL or
WALLETSVC_TEST_POSTGRES_URL, and is skipped with a note when neither is set. Traffic goes to
loopback only; every loop is bounded by a request count and a time cap. Prints figures only:
no test runs this file and nothing here asserts a timing.

Only public surfaces are used (the ``walletsvc`` CLI, the HTTP API, WALLETSVC_* settings),
except in the section marked "walletsvc internals" (bulk history, lifting a freeze, the
scanner), kept small so it is easy to adapt when the schema or the packages move.
"""

from __future__ import annotations

import argparse
import hashlib
import multiprocessing
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import httpx
import sqlalchemy as sa
import uvicorn
from bitcoin.core import (
    CBlock,
    CMutableTransaction,
    COutPoint,
    CTxIn,
    CTxInWitness,
    CTxOut,
    CTxWitness,
)
from bitcoin.core.script import (
    OP_CHECKSIG,
    OP_DUP,
    OP_EQUALVERIFY,
    OP_HASH160,
    SIGHASH_ALL,
    SIGVERSION_WITNESS_V0,
    CScript,
    CScriptWitness,
    SignatureHash,
)
from bitcoin.wallet import CKey
from fastapi import FastAPI, Header
from prometheus_client.parser import text_string_to_metric_families
from pydantic import BaseModel

REPO = Path(__file__).resolve().parents[1]
WALLET = "pool-hot"
# A regtest P2WPKH address that is not ours (hash160 of sha256(b"bench-miner")).
DESTINATION = "bcrt1qvjvfndw9cl750z72l59j5df29rw2df3z2tdkxu"
DESTINATION_SCRIPT = "0014649899b5c5c7fd478bcafd0b2a352a28dca6a622"
AMOUNT_SAT = 10_000
MAX_MONEY = 2_100_000_000_000_000
HOST = "127.0.0.1"  # loopback only

# Every request is allowed: limits far above anything the bench can post, no approval tiers,
# no allowlist. The velocity rules are kept (with unreachable limits) so that intake still
# reads the window's history, as it does under a real pool policy.
PERMISSIVE_POLICY = f"""\
version: 1
max_per_payout_sat: {MAX_MONEY}
velocity:
  - {{id: wallet-24h, window: 24h, scope: wallet, max_amount_sat: {MAX_MONEY}}}
  - {{id: destination-24h, window: 24h, scope: destination, max_amount_sat: {MAX_MONEY}}}
  - {{id: token-1h, window: 1h, scope: token, max_amount_sat: {MAX_MONEY}}}
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


@dataclass(frozen=True)
class Plan:
    """How long each measurement runs; every loop stops at whichever bound it meets first."""

    concurrencies: tuple[int, ...] = (1, 16, 64)
    seconds: float = 8.0
    max_requests: int = 4_000
    warmup: int = 10
    history_in_window: int = 100_000
    history_total: int = 1_000_000
    freeze_samples: int = 60
    freeze_seconds: float = 30.0  # per condition (idle, loaded); fewer samples if slower
    scanner_watched: int = 100_000
    scanner_outputs: int = 1_000
    round_payouts: int = 2_000
    round_singles: int = 200  # single payouts timed for the comparison, then extrapolated

    @classmethod
    def quick(cls) -> Plan:
        return cls(
            seconds=4.0,
            max_requests=1_000,
            warmup=5,
            history_in_window=10_000,
            history_total=100_000,
            freeze_samples=10,
            freeze_seconds=20.0,
            scanner_watched=10_000,
            round_singles=50,
        )


# -- load driver ---------------------------------------------------------------------------


@dataclass
class Figures:
    ok: int = 0
    failed: int = 0
    elapsed_s: float = 0.0
    latencies_s: list[float] = field(default_factory=list)
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def rate(self) -> float:
        return self.ok / self.elapsed_s if self.elapsed_s else 0.0

    def percentile_ms(self, pct: int) -> float:
        if not self.latencies_s:
            return float("nan")
        if len(self.latencies_s) == 1:
            return self.latencies_s[0] * 1000
        return statistics.quantiles(self.latencies_s, n=100, method="inclusive")[pct - 1] * 1000


def payout_poster(token: str, run: str) -> Callable[[httpx.Client, int], httpx.Response]:
    """POST /v1/withdrawals with a distinct Idempotency-Key per request (the same for both apps)."""

    def post(client: httpx.Client, n: int) -> httpx.Response:
        return client.post(
            "/v1/withdrawals",
            json={"wallet": WALLET, "destination": DESTINATION, "amount_sat": AMOUNT_SAT},
            headers={"Authorization": f"Bearer {token}", "Idempotency-Key": f"{run}-{n}"},
        )

    return post


def drive(
    base_url: str,
    post: Callable[[httpx.Client, int], httpx.Response],
    *,
    concurrency: int,
    max_requests: int,
    seconds: float,
    stop: threading.Event | None = None,
) -> Figures:
    """``concurrency`` client threads, each with its own keep-alive connection, post until
    ``max_requests`` were sent, ``seconds`` have passed, or ``stop`` is set."""
    figures = Figures()
    lock = threading.Lock()
    issued = 0
    start = time.monotonic()
    deadline = start + seconds

    def next_number() -> int | None:
        nonlocal issued
        with lock:
            if issued >= max_requests or time.monotonic() >= deadline:
                return None
            if stop is not None and stop.is_set():
                return None
            issued += 1
            return issued

    def client_loop() -> None:
        with httpx.Client(base_url=base_url, timeout=120) as client:
            while (n := next_number()) is not None:
                began = time.perf_counter()
                try:
                    response = post(client, n)
                    outcome = (
                        "ok" if response.status_code in (200, 201) else str(response.status_code)
                    )
                except httpx.HTTPError as exc:
                    outcome = type(exc).__name__
                took = time.perf_counter() - began
                with lock:
                    if outcome == "ok":
                        figures.ok += 1
                        figures.latencies_s.append(took)
                    else:
                        figures.failed += 1
                        figures.failures[outcome] = figures.failures.get(outcome, 0) + 1

    threads = [threading.Thread(target=client_loop, daemon=True) for _ in range(concurrency)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=seconds + 180)
    figures.elapsed_s = time.monotonic() - start
    return figures


def measure_intake(base_url: str, token: str, plan: Plan, label: str) -> dict[int, Figures]:
    run = uuid.uuid4().hex[:8]
    drive(
        base_url,
        payout_poster(token, f"warm-{run}"),
        concurrency=1,
        max_requests=plan.warmup,
        seconds=30,
    )
    results: dict[int, Figures] = {}
    for concurrency in plan.concurrencies:
        figures = drive(
            base_url,
            payout_poster(token, f"{run}-c{concurrency}"),
            concurrency=concurrency,
            max_requests=plan.max_requests,
            seconds=plan.seconds,
        )
        results[concurrency] = figures
        failed = f"  failed {figures.failures}" if figures.failed else ""
        print(
            f"  {label:<22} c={concurrency:<3} {figures.ok:>5} ok in {figures.elapsed_s:5.1f} s"
            f"  {figures.rate:7.1f} req/s  p50 {figures.percentile_ms(50):7.1f} ms"
            f"  p99 {figures.percentile_ms(99):7.1f} ms{failed}",
            flush=True,
        )
    return results


# -- servers in subprocesses -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        return int(sock.getsockname()[1])


class Server:
    """A uvicorn process on 127.0.0.1, its output in a log file; stopped on exit."""

    def __init__(self, argv: list[str], env: dict[str, str], log: Path, port: int) -> None:
        self.argv, self.env, self.log, self.port = argv, env, log, port
        self.url = f"http://{HOST}:{port}"
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Server:
        with self.log.open("ab") as out:
            self.process = subprocess.Popen(
                self.argv, env=self.env, stdout=out, stderr=subprocess.STDOUT
            )
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"server exited; see {self.log}")
            try:
                if httpx.get(f"{self.url}/v1/health", timeout=2).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        self.__exit__()
        raise RuntimeError(f"server did not start in 90 s; see {self.log}")

    def __exit__(self, *_: object) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGINT)
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(timeout=30)


def walletsvc_cli(env: dict[str, str], *args: str) -> str:
    executable = Path(sys.executable).with_name("walletsvc")
    argv = (
        [str(executable)] if executable.exists() else [sys.executable, "-m", "walletsvc.cli.main"]
    )
    done = subprocess.run(
        [*argv, *args], env=env, capture_output=True, text=True, timeout=300, check=False
    )
    if done.returncode != 0:
        raise RuntimeError(f"walletsvc {args[0]} failed: {done.stderr.strip()[-2000:]}")
    return done.stdout


@dataclass(frozen=True)
class Service:
    env: dict[str, str]
    database_url: str
    token: str
    token_id: str


def prepare_service(workdir: Path, database_url: str) -> Service:
    """A fresh data dir and database, the permissive policy, one wallet and an API token."""
    workdir.mkdir(parents=True, exist_ok=True)
    policy = workdir / "permissive.yaml"
    policy.write_text(PERMISSIVE_POLICY)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        "WALLETSVC_DATA_DIR": str(workdir / "data"),
        "WALLETSVC_DATABASE_URL": database_url,
        "WALLETSVC_POLICY_FILE": str(policy),
        "WALLETSVC_RUN_WORKER": "false",
        # The per-token request limit (600 a minute by default) would answer most of the
        # bench's requests 429: intake is what is measured, not the limiter.
        "WALLETSVC_RATE_LIMIT_REQUESTS": "0",
        "WALLETSVC_DEVCHAIN_MINE_INTERVAL_S": "0",
        "WALLETSVC_NETWORK": "regtest",
        "WALLETSVC_CHAIN_BACKEND": "embedded",
    }
    walletsvc_cli(env, "migrate")
    walletsvc_cli(env, "init", "--wallet", WALLET, "--policy", str(policy))
    out = walletsvc_cli(
        env,
        "token",
        "create",
        "--name",
        "bench",
        "--scope",
        "withdrawals:create",
        "--scope",
        "freeze",
        "--scope",
        "read",
    )
    lines = out.strip().splitlines()
    token_id = lines[0].split()[2]
    return Service(env=env, database_url=database_url, token=lines[-1].strip(), token_id=token_id)


def serve_walletsvc(service: Service, workdir: Path) -> Server:
    port = free_port()
    cli = Path(sys.executable).with_name("walletsvc")
    argv = [str(cli), "serve", "--host", HOST, "--port", str(port)]
    return Server(argv, service.env, workdir / "walletsvc.log", port)


def serve_baseline(database_url: str, workdir: Path) -> Server:
    port = free_port()
    argv = [sys.executable, __file__, "--serve-baseline", database_url, "--port", str(port)]
    env = {**os.environ}
    return Server(argv, env, workdir / "baseline.log", port)


# -- the baseline ------------------------------------------------------------------------------
# What intake would cost with nothing but FastAPI, pydantic, SQLAlchemy and one INSERT + COMMIT:
# the same engine settings as walletsvc.db.database (WAL and synchronous=FULL on SQLite, a pool
# of 10+20 on PostgreSQL), a sync route (run on the thread pool, like walletsvc's), and
# `uvicorn.run(..., log_level="info")` as `walletsvc serve` does (access log included).


def baseline_engine(url: str) -> sa.Engine:
    if url.startswith("sqlite"):
        engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})

        @sa.event.listens_for(engine, "connect")
        def _pragmas(dbapi_connection: Any, _record: Any) -> None:
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute("PRAGMA busy_timeout=60000")
            cursor.close()

        return engine
    return sa.create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


class PayoutBody(BaseModel):
    wallet: str
    destination: str
    amount_sat: int


def baseline_app(url: str) -> FastAPI:
    metadata = sa.MetaData()
    payouts = sa.Table(
        "payouts",
        metadata,
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("idempotency_key", sa.String(200), unique=True, nullable=False),
        sa.Column("wallet", sa.String(64), nullable=False),
        sa.Column("destination", sa.String(90), nullable=False),
        sa.Column("amount_sat", sa.BigInteger, nullable=False),
        sa.Column("created_at", sa.DateTime, nullable=False),
    )
    engine = baseline_engine(url)
    metadata.create_all(engine)
    app = FastAPI()

    @app.get("/v1/health")
    def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.post("/v1/withdrawals", status_code=201)
    def create(
        body: PayoutBody, idempotency_key: Annotated[str, Header(alias="Idempotency-Key")]
    ) -> dict[str, str]:
        payout_id = str(uuid.uuid4())
        with engine.begin() as conn:
            conn.execute(
                payouts.insert().values(
                    id=payout_id,
                    idempotency_key=idempotency_key,
                    wallet=body.wallet,
                    destination=body.destination,
                    amount_sat=body.amount_sat,
                    created_at=datetime.now(UTC).replace(tzinfo=None),
                )
            )
        return {"id": payout_id, "status": "approved"}

    return app


def run_baseline(url: str, port: int) -> None:
    uvicorn.run(baseline_app(url), host=HOST, port=port, log_level="info")


# -- databases -------------------------------------------------------------------------------


def postgres_server_url() -> str:
    return os.environ.get("WALLETSVC_BENCH_POSTGRES_URL") or os.environ.get(
        "WALLETSVC_TEST_POSTGRES_URL", ""
    )


@contextmanager
def fresh_database(backend: str, workdir: Path, name: str) -> Iterator[str]:
    if backend == "sqlite":
        yield f"sqlite:///{workdir / (name + '.db')}"
        return
    server = postgres_server_url()
    database = f"walletsvc_bench_{name}_{uuid.uuid4().hex[:8]}"
    admin = sa.create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{database}"')
    try:
        yield (
            sa.engine.make_url(server).set(database=database).render_as_string(hide_password=False)
        )
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        admin.dispose()


# == walletsvc internals ========================================================================
# The only code here that knows walletsvc's tables or packages. Adapt it when they move.


def insert_payout_history(service: Service, *, in_window: int, total: int) -> float:
    """``total`` payouts straight into ``withdrawals`` in one INSERT ... SELECT; the first
    ``in_window`` spread over the last 23 h (inside the 24 h velocity window), the rest
    between 2 and ~14 days old. They are tagged as intake reads them: status ``confirmed``
    (a holding status: it counts against the window), this wallet, the bench's token and
    destination. No idempotency-key or audit rows are written for them (intake reads neither
    by range). Returns the seconds the insert took."""
    began = time.perf_counter()
    engine = sa.create_engine(service.database_url)
    anchor = datetime.now(UTC).replace(tzinfo=None, microsecond=0)
    step_in_window = 82_800 / max(in_window, 1)
    columns = (
        "id, wallet_id, token_id, destination, script_pubkey, amount_sat, status, decision,"
        " policy_hash, created_at, updated_at"
    )
    params = {
        "wallet": WALLET,
        "token_id": service.token_id,
        "destination": DESTINATION,
        "script": DESTINATION_SCRIPT,
        "amount": AMOUNT_SAT,
        "policy_hash": "0" * 64,
        "in_window": in_window,
        "total": total,
        "step": step_in_window,
        "anchor": anchor,
    }
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(
                sa.text(
                    f"INSERT INTO withdrawals ({columns}) "
                    "SELECT 'hist-' || lpad(i::text, 10, '0'), w.id, :token_id, :destination,"
                    " :script, :amount, 'confirmed', '{}'::json, :policy_hash, t.at, t.at"
                    " FROM generate_series(0, :total - 1) AS i"
                    " CROSS JOIN (SELECT id FROM wallets WHERE name = :wallet) AS w"
                    " CROSS JOIN LATERAL (SELECT CASE WHEN i < :in_window"
                    "   THEN CAST(:anchor AS timestamp) - make_interval(secs => i * :step)"
                    "   ELSE CAST(:anchor AS timestamp) - interval '2 days'"
                    "        - make_interval(secs => i - :in_window) END AS at) AS t"
                ),
                params,
            )
            conn.exec_driver_sql("ANALYZE withdrawals")
        else:
            stamp = "strftime('%Y-%m-%d %H:%M:%S', :anchor, '-' || {} || ' seconds') || '.000000'"
            at = (
                f"CASE WHEN i < :in_window THEN {stamp.format('(i * :step)')}"
                f" ELSE {stamp.format('(172800 + i - :in_window)')} END"
            )
            conn.execute(
                sa.text(
                    "WITH RECURSIVE seq(i) AS (SELECT 0 UNION ALL SELECT i + 1 FROM seq"
                    "  WHERE i + 1 < :total) "
                    f"INSERT INTO withdrawals ({columns}) "
                    "SELECT printf('hist-%010d', i), w.id, :token_id, :destination, :script,"
                    f" :amount, 'confirmed', '{{}}', :policy_hash, {at}, {at}"
                    " FROM seq CROSS JOIN (SELECT id FROM wallets WHERE name = :wallet) AS w"
                ),
                {**params, "anchor": anchor.isoformat(sep=" ")},
            )
            conn.exec_driver_sql("ANALYZE")
    engine.dispose()
    return time.perf_counter() - began


def lift_freezes(engine: sa.Engine) -> None:
    """Lift every active freeze directly (the governed unfreeze needs a staff quorum)."""
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "UPDATE freezes SET lifted_at = :now, lifted_by = 'bench' WHERE lifted_at IS NULL"
            ),
            {"now": datetime.now(UTC).replace(tzinfo=None)},
        )


def transaction_paying(chain: Any, scripts: list[bytes], outputs: int) -> bytes:
    """A signed transaction of ``outputs`` outputs cycling over ``scripts``, spending a
    coinbase mined (and matured) on ``chain`` to a key of the bench's own."""
    funder = CKey(hashlib.sha256(b"bench-scanner-funder").digest())
    key_hash = hashlib.new("ripemd160", hashlib.sha256(funder.pub).digest()).digest()
    chain.mine(1, bytes([0, 20]) + key_hash)
    coinbase = CBlock.deserialize(chain.block_bytes(chain.tip().hash)).vtx[0]
    chain.mine(100)  # coinbase maturity
    value = int(coinbase.vout[0].nValue)
    each = (value - 250_000) // outputs  # 250,000 sat of fee: ~8 sat/vB for ~31 kvB
    tx = CMutableTransaction(
        [CTxIn(COutPoint(coinbase.GetTxid(), 0))],
        [CTxOut(each, CScript(scripts[i % len(scripts)])) for i in range(outputs)],
    )
    script_code = CScript([OP_DUP, OP_HASH160, key_hash, OP_EQUALVERIFY, OP_CHECKSIG])
    digest = SignatureHash(
        script_code, tx, 0, SIGHASH_ALL, amount=value, sigversion=SIGVERSION_WITNESS_V0
    )
    signature = funder.sign(digest) + bytes([SIGHASH_ALL])
    tx.wit = CTxWitness([CTxInWitness(CScriptWitness([signature, funder.pub]))])
    return bytes(tx.serialize())


def scanner_block_seconds(
    workdir: Path, database_url: str, *, watched: int, outputs: int
) -> tuple[float, int]:
    """Seconds the scanner takes for one block whose one transaction pays ``outputs`` of our
    outputs (cycling over the wallet's first 10 receive addresses), with the wallet's initial
    look-ahead watched, or with receive addresses derived up to ``watched``. In-process: the
    embedded chain and the scanner of a Runtime. Returns (seconds, watched addresses)."""
    # walletsvc's internals, imported here so that the rest of the bench does not need them.
    from walletsvc.bootstrap.runtime import Runtime
    from walletsvc.bootstrap.setup import initialise
    from walletsvc.config import Settings
    from walletsvc.db.migrate import upgrade
    from walletsvc.db.models import Address
    from walletsvc.devchain.service import open_dev_chain
    from walletsvc.signer.server import SignerServer
    from walletsvc.wallets.service import (
        RECEIVE_CHAIN,
        current_epoch,
        ensure_derived,
        get_wallet,
    )

    workdir.mkdir(parents=True, exist_ok=True)
    policy = workdir / "permissive.yaml"
    policy.write_text(PERMISSIVE_POLICY)
    settings = Settings(
        data_dir=workdir / "data",
        database_url=database_url,
        kek_file=workdir / "data" / "kek.bin",
        policy_file=policy,
        run_worker=False,
    )
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    upgrade(database_url)
    # The wallet's seed is made by the signer: its socket is served from a thread here, as
    # for the round's signing pass below.
    with SignerServer(settings):
        initialise(settings, wallet=WALLET, policy_file=policy, actor="bench")
    runtime = Runtime.open(settings, chain=open_dev_chain(settings))
    try:
        if watched:
            with runtime.db.write() as uow:
                wallet = get_wallet(uow, WALLET)
                epoch = current_epoch(uow, wallet)
                ensure_derived(uow, wallet, epoch, RECEIVE_CHAIN, watched - 1)
            with runtime.db.engine.connect() as conn:  # fresh planner statistics, as for history
                conn.exec_driver_sql("ANALYZE")
                conn.commit()
        with runtime.db.read() as uow:
            session = uow.session
            ours = [
                bytes.fromhex(script)
                for script in session.scalars(
                    sa.select(Address.script_pubkey)
                    .where(Address.chain == RECEIVE_CHAIN)
                    .order_by(Address.index)
                    .limit(10)
                )
            ]
            count = int(session.scalar(sa.select(sa.func.count()).select_from(Address)) or 0)
        chain: Any = runtime.chain
        chain.broadcast(transaction_paying(chain, ours, outputs))
        runtime.scanner.sync()  # up to the tip before the block of interest (not timed)
        chain.mine(1)
        began = time.perf_counter()
        runtime.scanner.sync()
        return time.perf_counter() - began, count
    finally:
        runtime.close()


def round_sign_seconds(service: Service) -> tuple[float, int]:
    """Seconds of one worker pass over the wallet's approved payouts (plan, sign with the
    kernel check, store, broadcast to the embedded chain), after funding the wallet with
    mature coinbases (not timed). In-process, with the server stopped. Returns (seconds,
    transactions signed)."""
    from walletsvc.bootstrap.runtime import Runtime
    from walletsvc.config import Settings
    from walletsvc.devchain.service import open_dev_chain
    from walletsvc.signer.server import SignerServer
    from walletsvc.wallets.service import current_address, get_wallet

    data_dir = Path(service.env["WALLETSVC_DATA_DIR"])
    settings = Settings(
        data_dir=data_dir,
        database_url=service.database_url,
        kek_file=data_dir / "kek.bin",
        policy_file=Path(service.env["WALLETSVC_POLICY_FILE"]),
        run_worker=False,
    )
    # The signer is a process of its own next to `walletsvc serve`; here it serves its
    # socket from a thread of this process (as the test fixtures do), on the same data.
    with SignerServer(settings):
        runtime = Runtime.open(settings, chain=open_dev_chain(settings))
        try:
            with runtime.db.read() as uow:
                address = current_address(uow, get_wallet(uow, WALLET))
            chain: Any = runtime.chain
            chain.mine(110, bytes.fromhex(address.script_pubkey))
            runtime.scanner.sync()
            began = time.perf_counter()
            report = runtime.worker.run_once()
            took = time.perf_counter() - began
            if report.errors or report.broadcast_txids != report.signed_txids:
                print(f"  round: the worker reported {report.errors}", flush=True)
            return took, len(report.signed_txids)
        finally:
            runtime.close()


# == end of walletsvc internals ==================================================================


# -- freeze latency ----------------------------------------------------------------------------


def measure_freeze(server: Server, service: Service, plan: Plan, *, load: int) -> Figures:
    """Up to ``plan.freeze_samples`` freezes of the wallet's withdrawals (within
    ``plan.freeze_seconds``), each lifted directly in the database before the next, so every
    sample freezes an unfrozen wallet, while ``load`` clients post payouts (0: idle).

    The sampler runs in a process of its own: among the ``load`` client threads of this
    process it would wait for this interpreter's GIL, and its figure would include that."""
    stop = threading.Event()
    background: threading.Thread | None = None
    payouts: list[Figures] = []
    if load:
        post = payout_poster(service.token, f"freeze-load-{uuid.uuid4().hex[:8]}")
        background = threading.Thread(
            target=lambda: payouts.append(
                drive(
                    server.url,
                    post,
                    concurrency=load,
                    max_requests=1_000_000,
                    seconds=plan.freeze_seconds + 60,
                    stop=stop,
                )
            ),
            daemon=True,
        )
        background.start()
        time.sleep(2.0)  # let the load reach its steady state
    try:
        spawn = multiprocessing.get_context("spawn")
        with ProcessPoolExecutor(max_workers=1, mp_context=spawn) as sampler:
            job = sampler.submit(
                sample_freezes,
                server.url,
                service.token,
                service.database_url,
                plan.freeze_samples,
                plan.freeze_seconds,
            )
            return job.result(timeout=plan.freeze_seconds + 180)
    finally:
        stop.set()
        if background is not None:
            background.join(timeout=200)
        for figures in payouts:  # what the server did meanwhile: a freeze is fast on an idle one
            print(
                f"  (meanwhile {figures.ok} payouts at {figures.rate:.1f} req/s,"
                f" p99 {figures.percentile_ms(99):.1f} ms)",
                flush=True,
            )


def sample_freezes(
    base_url: str, token: str, database_url: str, samples: int, seconds: float
) -> Figures:
    """The freeze sampler (in its own process): one freeze at a time, lifted before the next."""
    engine = sa.create_engine(
        database_url,
        **({"connect_args": {"timeout": 60}} if database_url.startswith("sqlite") else {}),
    )
    figures = Figures()
    began = time.monotonic()
    try:
        with httpx.Client(base_url=base_url, timeout=120) as client:
            client.get("/v1/health").raise_for_status()  # connect first: not part of a sample
            while figures.ok + figures.failed < samples:
                if time.monotonic() - began > seconds:
                    break
                start = time.perf_counter()
                response = client.post(
                    "/v1/freeze",
                    json={"scope": "withdrawals", "wallet": WALLET, "reason": "bench sample"},
                    headers={"Authorization": f"Bearer {token}"},
                )
                took = time.perf_counter() - start
                if response.status_code == 201:
                    figures.ok += 1
                    figures.latencies_s.append(took)
                else:
                    figures.failed += 1
                lift_freezes(engine)
                time.sleep(0.1)
    finally:
        figures.elapsed_s = time.monotonic() - began
        engine.dispose()
    return figures


# -- profile -----------------------------------------------------------------------------------


def profile_intake(server: Server, service: Service, workdir: Path, seconds: float) -> None:
    """py-spy (if on PATH) samples the server process while 16 clients post payouts."""
    beside = Path(sys.executable).with_name("py-spy")  # the venv's, when it is not on PATH
    py_spy = str(beside) if beside.exists() else shutil.which("py-spy")
    if py_spy is None or server.process is None:
        print("  (py-spy not found beside this Python or on PATH: no profile)")
        return
    out = workdir / "intake-profile.txt"
    spy = subprocess.Popen(
        [
            py_spy,
            "record",
            "--pid",
            str(server.process.pid),
            "--duration",
            str(int(seconds)),
            "--format",
            "raw",
            "--output",
            str(out),
            "--rate",
            "100",
            "--nonblocking",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    drive(
        server.url,
        payout_poster(service.token, f"prof-{uuid.uuid4().hex[:8]}"),
        concurrency=16,
        max_requests=1_000_000,
        seconds=seconds,
    )
    spy.wait(timeout=seconds + 60)
    if out.exists():
        summarise_profile(out)
        print(f"  (raw py-spy stacks: {out}, removed with the temporary directory)")


def summarise_profile(raw: Path, top: int = 25) -> None:
    """Inclusive share of samples per walletsvc function, and the hottest leaf frames, from
    py-spy's raw (collapsed-stack) output: lines of ``frame;frame;... count``."""
    inclusive: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not count_text.isdigit():
            continue
        count = int(count_text)
        total += count
        frames = [re.sub(r":\d+\)$", ")", frame) for frame in stack.split(";")]
        for frame in set(frames):
            inclusive[frame] += count
        leaves[frames[-1]] += count
    if not total:
        print("  profile: no samples")
        return
    print(f"  profile at concurrency 16: {total} samples; inclusive share of walletsvc frames:")
    ours = [(f, c) for f, c in inclusive.most_common() if "walletsvc/" in f and "cli/" not in f]
    for frame, count in ours[:top]:
        print(f"    {100 * count / total:5.1f}%  {frame}")
    print("  inclusive share of library frames (the HTTP stack, SQLAlchemy, the driver):")
    layers = ("fastapi/", "starlette/", "uvicorn/", "anyio/", "sqlalchemy/", "psycopg/", "pydantic")
    theirs = [(f, c) for f, c in inclusive.most_common() if any(x in f for x in layers)]
    for frame, count in theirs[: top // 2]:
        print(f"    {100 * count / total:5.1f}%  {frame}")
    print("  hottest leaf frames (self time):")
    for frame, count in leaves.most_common(top // 2):
        print(f"    {100 * count / total:5.1f}%  {frame}")


# -- scanner -----------------------------------------------------------------------------------


def measure_scanner(backend: str, workdir: Path, plan: Plan) -> None:
    for watched in (0, plan.scanner_watched):
        with fresh_database(backend, workdir, f"scan{watched}") as url:
            seconds, count = scanner_block_seconds(
                workdir / f"scanner-{backend}-{watched}",
                url,
                watched=watched,
                outputs=plan.scanner_outputs,
            )
        print(
            f"  scanner  {backend:<10} {count:>7} watched addresses: one block paying"
            f" {plan.scanner_outputs} of our outputs scanned in {seconds:6.3f} s",
            flush=True,
        )


# -- payout round ----------------------------------------------------------------------------


def round_destinations(n: int) -> list[str]:
    """``n`` distinct regtest P2WPKH addresses that are not ours."""
    from bip_utils import SegwitBech32Encoder

    return [
        str(
            SegwitBech32Encoder.Encode(
                "bcrt", 0, hashlib.new("ripemd160", f"round miner {i}".encode()).digest()
            )
        )
        for i in range(n)
    ]


def measure_round(backend: str, workdir: Path, plan: Plan) -> None:
    n = plan.round_payouts
    body = {
        "wallet": WALLET,
        "reference": "bench round",
        "payouts": [
            {"destination": d, "amount_sat": AMOUNT_SAT + i}
            for i, d in enumerate(round_destinations(n))
        ],
    }
    with fresh_database(backend, workdir, "round") as url:
        service = prepare_service(workdir / "round", url)
        headers = {"Authorization": f"Bearer {service.token}"}
        with (
            serve_walletsvc(service, workdir) as server,
            httpx.Client(base_url=server.url, timeout=120) as client,
        ):
            post = payout_poster(service.token, "single")
            client.get("/v1/health").raise_for_status()  # warm-up, not timed
            began = time.perf_counter()
            answer = client.post(
                "/v1/payout-rounds", json=body, headers={**headers, "Idempotency-Key": "round"}
            )
            accepted_s = time.perf_counter() - began
            answer.raise_for_status()
            # The single payouts come after the round, so the worker's first batch (oldest
            # first, at most the output cap of 2,000) is exactly the round.
            began = time.perf_counter()
            for i in range(plan.round_singles):
                post(client, i).raise_for_status()
            single_s = (time.perf_counter() - began) / plan.round_singles
        signed_s, transactions = round_sign_seconds(service)
    print(
        f"  round    {backend:<10} {n:,} payouts accepted in {accepted_s:6.3f} s"
        f" ({accepted_s / n * 1000:.2f} ms per payout); as single POST /v1/withdrawals:"
        f" {single_s * n:6.1f} s ({single_s * 1000:.1f} ms each over {plan.round_singles},"
        f" extrapolated); signed and broadcast in {signed_s:6.3f} s ({transactions}"
        f" transaction{'s' if transactions != 1 else ''})",
        flush=True,
    )


# -- report ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    database: str
    concurrency: int
    walletsvc: Figures
    reference: Figures | None
    reference_name: str  # "baseline" or "empty history"


def print_table(rows: list[Row]) -> None:
    header = (
        "database", "c", "walletsvc req/s", "p50 ms", "p99 ms",
        "compared with", "req/s", "p50 ms", "p99 ms", "ratio",
    )  # fmt: skip
    print()
    print("| " + " | ".join(header) + " |")
    print("|" + "|".join("---" if i in (0, 5) else "--:" for i in range(len(header))) + "|")
    for row in rows:
        ours, ref = row.walletsvc, row.reference
        cells = [row.database, str(row.concurrency), *_rate_cells(ours), row.reference_name]
        cells += [*_rate_cells(ref), f"{ours.rate / ref.rate:.2f}x"] if ref and ref.rate else [
            "-", "-", "-", "-",
        ]  # fmt: skip
        print("| " + " | ".join(cells) + " |")


def _rate_cells(figures: Figures) -> list[str]:
    return [
        f"{figures.rate:.1f}",
        f"{figures.percentile_ms(50):.1f}",
        f"{figures.percentile_ms(99):.1f}",
    ]


FREEZE_STAGES = ("queued", "authenticate", "signer", "gate", "record")
# stage -> (count, sum in seconds, {bucket upper bound: cumulative count})
StageSnapshot = dict[str, tuple[float, float, dict[float, float]]]


def freeze_stages(server: Server) -> StageSnapshot:
    """The server's ``walletsvc_freeze_stage_seconds`` histogram, per stage."""
    text = httpx.get(server.url + "/metrics", timeout=60).text
    stages: StageSnapshot = {}
    for family in text_string_to_metric_families(text):
        if family.name != "walletsvc_freeze_stage_seconds":
            continue
        for sample in family.samples:
            stage = sample.labels.get("stage", "")
            count, total, buckets = stages.get(stage, (0.0, 0.0, {}))
            if sample.name.endswith("_count"):
                count = sample.value
            elif sample.name.endswith("_sum"):
                total = sample.value
            elif sample.name.endswith("_bucket"):
                buckets[float(sample.labels["le"])] = sample.value
            stages[stage] = (count, total, buckets)
    return stages


def print_freeze_stages(before: StageSnapshot, after: StageSnapshot) -> None:
    """Where the freezes between two snapshots spent their time: the mean per stage, and the
    histogram bucket that holds the 90th percentile (an upper bound)."""
    cells = []
    for stage in FREEZE_STAGES:
        count, total, buckets = after.get(stage, (0.0, 0.0, {}))
        old_count, old_total, old_buckets = before.get(stage, (0.0, 0.0, {}))
        n = count - old_count
        if n <= 0:
            continue
        mean_ms = 1000 * (total - old_total) / n
        bound = next(
            (le for le in sorted(buckets) if buckets[le] - old_buckets.get(le, 0.0) >= 0.9 * n),
            float("inf"),
        )
        cells.append(f"{stage} {mean_ms:.1f} / ≤{1000 * bound:g}")
    print(f"    server-side stages (mean / p90 bucket, ms): {', '.join(cells)}", flush=True)


def print_freeze(label: str, figures: Figures) -> None:
    slowest = max(figures.latencies_s, default=0.0) * 1000
    failed = f"  failed {figures.failed}" if figures.failed else ""
    print(
        f"  freeze {label:<24} {figures.ok} samples  p50 {figures.percentile_ms(50):7.1f} ms"
        f"  p99 {figures.percentile_ms(99):7.1f} ms  max {slowest:7.1f} ms{failed}",
        flush=True,
    )


# -- one database kind -------------------------------------------------------------------------


def run_empty(
    backend: str, workdir: Path, plan: Plan, only: set[str], profile_s: float
) -> tuple[list[Row], dict[int, Figures]]:
    """Baseline, then walletsvc on an empty history; freeze latency and the profile on it."""
    rows: list[Row] = []
    empty: dict[int, Figures] = {}
    reference: dict[int, Figures] = {}
    if "intake" in only:
        with fresh_database(backend, workdir, "base") as url, serve_baseline(url, workdir) as app:
            reference = measure_intake(app.url, "unused", plan, "baseline")
    with fresh_database(backend, workdir, "svc") as url:
        service = prepare_service(workdir / "svc", url)
        with serve_walletsvc(service, workdir) as server:
            if "intake" in only:
                empty = measure_intake(server.url, service.token, plan, "walletsvc (empty)")
                rows += [Row(backend, c, f, reference.get(c), "baseline") for c, f in empty.items()]
            if "freeze" in only:
                before = freeze_stages(server)
                print_freeze("idle", measure_freeze(server, service, plan, load=0))
                after_idle = freeze_stages(server)
                print_freeze_stages(before, after_idle)
                loaded = measure_freeze(server, service, plan, load=64)
                print_freeze("under 64 payout clients", loaded)
                print_freeze_stages(after_idle, freeze_stages(server))
            if profile_s:
                profile_intake(server, service, workdir, profile_s)
    return rows, empty


def run_history(backend: str, workdir: Path, plan: Plan, empty: dict[int, Figures]) -> list[Row]:
    with fresh_database(backend, workdir, "hist") as url:
        service = prepare_service(workdir / "hist", url)
        took = insert_payout_history(
            service, in_window=plan.history_in_window, total=plan.history_total
        )
        print(
            f"  history: {plan.history_total:,} payouts inserted ({plan.history_in_window:,}"
            f" inside the 24 h window) in {took:.1f} s",
            flush=True,
        )
        with serve_walletsvc(service, workdir) as server:
            label = f"walletsvc ({plan.history_in_window // 1000}k in window)"
            history = measure_intake(server.url, service.token, plan, label)
    return [Row(backend, c, f, empty.get(c), "empty history") for c, f in history.items()]


def run_backend(backend: str, root: Path, plan: Plan, only: set[str], profile_s: float) -> None:
    print(f"\n== {backend} ==", flush=True)
    workdir = root / backend
    workdir.mkdir()
    rows: list[Row] = []
    empty: dict[int, Figures] = {}
    if only & {"intake", "freeze"} or profile_s:
        rows, empty = run_empty(backend, workdir, plan, only, profile_s)
    if "history" in only:
        rows += run_history(backend, workdir, plan, empty)
    if "scanner" in only:
        measure_scanner(backend, workdir, plan)
    if "round" in only:
        measure_round(backend, workdir, plan)
    if rows:
        print_table(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="short runs, smaller history")
    parser.add_argument(
        "--backend",
        choices=("auto", "sqlite", "postgresql", "both"),
        default="auto",
        help="auto (default): PostgreSQL when its URL is set, else SQLite; both: twice as long",
    )
    parser.add_argument(
        "--only",
        default="intake,history,freeze,scanner,round",
        help="comma-separated: intake,history,freeze,scanner,round",
    )
    parser.add_argument(
        "--profile",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="sample the server with py-spy at concurrency 16 for this long",
    )
    parser.add_argument("--serve-baseline", metavar="DATABASE_URL", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=0, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve_baseline:
        run_baseline(args.serve_baseline, args.port)
        return
    plan = Plan.quick() if args.quick else Plan()
    only = {part.strip() for part in args.only.split(",") if part.strip()}
    backends = {
        "both": ["sqlite", "postgresql"],
        "auto": ["postgresql" if postgres_server_url() else "sqlite"],
    }.get(args.backend, [args.backend])
    print("Intake at pool scale (figures only; docs/performance.md explains them)")
    print(
        f"load average at start: {' '.join(f'{x:.2f}' for x in os.getloadavg())}"
        f"  cpus: {os.cpu_count()}  quick: {args.quick}"
    )
    if args.backend in ("auto", "postgresql", "both") and not postgres_server_url():
        print(
            "note: PostgreSQL skipped: set WALLETSVC_BENCH_POSTGRES_URL or"
            " WALLETSVC_TEST_POSTGRES_URL to measure it"
        )
    with tempfile.TemporaryDirectory(prefix="walletsvc-bench-") as tmp:
        for backend in backends:
            if backend == "postgresql" and not postgres_server_url():
                continue
            run_backend(backend, Path(tmp), plan, only, args.profile)
    print(f"\nload average at end: {' '.join(f'{x:.2f}' for x in os.getloadavg())}")


if __name__ == "__main__":
    main()
