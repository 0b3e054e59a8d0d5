"""Shared fixtures: real databases (SQLite and PostgreSQL), a chain, real HTTP.

The chain: tests whose subject is not the chain run on tests.fakechain.FakeChain (in memory,
scripts still checked by libbitcoinkernel); tests marked ``kernel`` (reorgs, restarts, crash
recovery, the RPC backend, end-to-end flows) get the real embedded chain from walletsvc.devchain.

Database isolation: the schema is built once per session by Alembic into a template (a file
for SQLite, a template database for PostgreSQL); each test gets a fresh copy. PostgreSQL runs
when WALLETSVC_TEST_POSTGRES_URL is set (CI sets it) and is skipped, with that reason, if not.
"""

from __future__ import annotations

import os
import shutil
import sys
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, settings

from tests.fakechain import FakeChain
from walletsvc.api.app import create_app
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.bootstrap.setup import initialise
from walletsvc.config import Settings
from walletsvc.db.migrate import upgrade
from walletsvc.devchain.service import open_dev_chain
from walletsvc.domain.ports import ChainBackend
from walletsvc.governance.tokens import SCOPES, create_token
from walletsvc.signer.server import SignerServer, open_core
from walletsvc.wallets.service import current_address, get_wallet

REPO = Path(__file__).resolve().parents[1]
POSTGRES_URL = os.environ.get("WALLETSVC_TEST_POSTGRES_URL", "")
WALLET = "pool-hot"
BACKENDS = ["sqlite", "postgresql"]
# The in-process signers of the fixtures, by signer directory: tests that play the signer's
# operator (a local set-up step on the signer host) reach its core through here.
RUNNING_SIGNERS: dict[Path, SignerServer] = {}


class SignerClock:
    """The clock of the fixtures' in-process signers: real time, except while a test has
    handed the service an explicit moment (``now=``, the TOTP tests' clock injection): the
    signer, which checks every step-up code by its own clock, is then at that moment too."""

    def __init__(self) -> None:
        self.pinned: datetime | None = None

    def __repr__(self) -> str:
        return f"SignerClock(pinned={self.pinned})"

    def __call__(self) -> datetime:
        return self.pinned or datetime.now(UTC)


SIGNER_CLOCK = SignerClock()


@pytest.fixture(autouse=True)
def signer_follows_injected_now(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Every service call that takes ``now`` reads it through governance.staff.now_utc; here
    that also sets the in-process signer's clock, so codes of an injected moment are checked
    at that moment (no sleeping, no step-boundary luck)."""
    from walletsvc.governance import staff

    original = staff.now_utc

    def now_utc(now: datetime | None) -> datetime:
        # The service's own background threads (walletsvc-worker, -webhooks) ask for "now"
        # all the time: they must not move the clock a test pinned for its next call.
        if now is not None or not threading.current_thread().name.startswith("walletsvc-"):
            SIGNER_CLOCK.pinned = now
        return original(now)

    for name, module in list(sys.modules.items()):
        if name.startswith("walletsvc.") and getattr(module, "now_utc", None) is original:
            monkeypatch.setattr(module, "now_utc", now_utc)
    yield
    SIGNER_CLOCK.pinned = None


# Property tests judge outcomes, never speed: CI's 2 cores are often loaded, so no example may
# fail for taking long (hypothesis' default 200 ms deadline) or for slow data generation.
settings.register_profile(
    "walletsvc", deadline=None, suppress_health_check=[HealthCheck.too_slow], print_blob=True
)
settings.load_profile("walletsvc")


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    upgrade(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    if not POSTGRES_URL:
        pytest.skip("PostgreSQL tests need WALLETSVC_TEST_POSTGRES_URL (CI sets it)")
    name = f"walletsvc_tpl_{os.getpid()}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    upgrade(_with_database(POSTGRES_URL, name))
    yield name
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def _with_database(url: str, name: str) -> str:
    return sa.engine.make_url(url).set(database=name).render_as_string(hide_password=False)


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        path = tmp_path / "walletsvc.db"
        shutil.copyfile(template, path)
        yield f"sqlite:///{path}"
        return
    template_name: str = request.getfixturevalue("postgres_template")
    name = f"walletsvc_t_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
    yield _with_database(POSTGRES_URL, name)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Iterator[Settings]:
    """The test's settings, with a real signer serving its socket (a thread of this process;
    tests/signer starts real signer processes where the process boundary is the subject)."""
    s = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        kek_file=tmp_path / "data" / "kek.bin",
        policy_file=REPO / "policies" / "default.yaml",
        run_worker=False,
    )
    with SignerServer(s, open_core(s, clock=SIGNER_CLOCK)) as signer:
        RUNNING_SIGNERS[s.signer_path] = signer
        yield s
    RUNNING_SIGNERS.pop(s.signer_path, None)


def uses_kernel(node: pytest.Item | pytest.Collector) -> bool:
    return node.get_closest_marker("kernel") is not None


def open_test_chain(node: pytest.Item | pytest.Collector, settings: Settings) -> ChainBackend:
    """The real embedded chain for ``kernel`` tests, the in-memory fake for the others."""
    return open_dev_chain(settings) if uses_kernel(node) else FakeChain()


@pytest.fixture
def runtime(request: pytest.FixtureRequest, settings: Settings) -> Iterator[Runtime]:
    initialise(settings, wallet=WALLET, policy_file=settings.policy_file, actor="test")
    rt = Runtime.open(settings, chain=open_test_chain(request.node, settings))
    yield rt
    rt.close()


@pytest.fixture
def client(runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(runtime.settings, runtime=runtime)) as test_client:
        yield test_client


@dataclass(frozen=True)
class Tokens:
    all: str
    read_only: str
    create_only: str


@pytest.fixture
def tokens(runtime: Runtime) -> Tokens:
    def make(name: str, scopes: set[str]) -> str:
        return create_token(
            runtime.db, runtime.tags, name=name, scopes=sorted(scopes), actor="test"
        ).secret

    return Tokens(
        all=make("engine", set(SCOPES)),
        read_only=make("dashboard", {"read"}),
        create_only=make("creator", {"withdrawals:create"}),
    )


def auth(token: str, key: str | None = None) -> dict[str, str]:
    headers = {"Authorization": f"Bearer {token}"}
    if key is not None:
        headers["Idempotency-Key"] = key
    return headers


def fund_wallet(runtime: Runtime, *, blocks: int = 110) -> None:
    """Mine coinbases to the wallet's deposit address and let the scanner see them."""
    with runtime.db.read() as uow:
        address = current_address(uow, get_wallet(uow, WALLET))
    runtime.chain.mine(blocks, bytes.fromhex(address.script_pubkey))  # type: ignore[attr-defined]
    runtime.scanner.sync()


@pytest.fixture
def funded(runtime: Runtime) -> Runtime:
    fund_wallet(runtime)
    return runtime


# -- one app per module and backend ----------------------------------------------------------
# For tables of requests that must write nothing (bad input): the cases run one after another
# against one initialised service instead of paying for a fresh database each.


@dataclass(frozen=True)
class SharedApp:
    runtime: Runtime
    client: TestClient
    tokens: Tokens


@pytest.fixture(scope="module", params=BACKENDS)
def shared_app(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SharedApp]:
    tmp = tmp_path_factory.mktemp("shared")
    admin: sa.Engine | None = None
    name = ""
    if request.param == "sqlite":
        template: Path = request.getfixturevalue("sqlite_template")
        shutil.copyfile(template, tmp / "walletsvc.db")
        url = f"sqlite:///{tmp / 'walletsvc.db'}"
    else:
        template_name: str = request.getfixturevalue("postgres_template")
        name = f"walletsvc_m_{uuid.uuid4().hex[:12]}"
        admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}" TEMPLATE "{template_name}"')
        url = _with_database(POSTGRES_URL, name)
    shared = Settings(
        data_dir=tmp / "data",
        database_url=url,
        kek_file=tmp / "data" / "kek.bin",
        policy_file=REPO / "policies" / "default.yaml",
        run_worker=False,
    )
    signer = SignerServer(shared).start()
    RUNNING_SIGNERS[shared.signer_path] = signer
    initialise(shared, wallet=WALLET, policy_file=shared.policy_file, actor="test")
    rt = Runtime.open(shared, chain=open_test_chain(request.node, shared))
    try:

        def make(token_name: str, scopes: set[str]) -> str:
            return create_token(
                rt.db, rt.tags, name=token_name, scopes=sorted(scopes), actor="test"
            ).secret

        tokens = Tokens(
            all=make("engine", set(SCOPES)),
            read_only=make("dashboard", {"read"}),
            create_only=make("creator", {"withdrawals:create"}),
        )
        with TestClient(create_app(shared, runtime=rt)) as test_client:
            yield SharedApp(rt, test_client, tokens)
    finally:
        rt.close()
        signer.close()
        if admin is not None:
            with admin.connect() as conn:
                conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            admin.dispose()
