"""The signer as its own OS process: its files, its socket, a kill, a tampered ledger, and a
service process that holds no seed.

These start `walletsvc signer` for real (``python -m walletsvc.cli.main signer``). The
signer prints ``signer serving <socket>`` once its socket listens; the tests wait for that
line, not for time to pass.
"""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.conftest import REPO, WALLET, fund_wallet
from tests.fakechain import FakeChain
from tests.helpers import external_destination, run_cli, service_env
from tests.signer.helpers import coins, payout, plan_paying
from walletsvc.bootstrap.health import readiness
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.bootstrap.setup import initialise
from walletsvc.config import Settings
from walletsvc.domain.coinselect import COINBASE_MATURITY
from walletsvc.domain.errors import DependencyUnavailable, Frozen, SigningRefused
from walletsvc.payouts.intake import WithdrawalInput, request_withdrawal
from walletsvc.signer.client import SignerClient
from walletsvc.signer.server import KEY_FILE, LEDGER_FILE, close_core, open_core


class SignerProcess:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.proc: subprocess.Popen[str] | None = None

    def start(self) -> SignerProcess:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "walletsvc.cli.main", "signer"],
            env=service_env(self.settings),
            cwd=REPO,
            stderr=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stderr is not None
        for line in self.proc.stderr:  # blocks until the socket listens, or the process ends
            if line.startswith("signer serving"):
                return self
        raise AssertionError(f"the signer did not start (exit {self.proc.wait()})")

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(timeout=30)


@pytest.fixture
def shared_dir() -> Iterator[Path]:
    """A directory every user may traverse (tmp_path's parents are root's alone), so a
    refusal to another user comes from the signer's own modes, not from the path."""
    path = Path(tempfile.mkdtemp(prefix="walletsvc-signer-"))
    path.chmod(0o755)
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture
def separate(shared_dir: Path, database_url: str) -> Iterator[tuple[Runtime, SignerProcess]]:
    """A funded service whose signer is another process."""
    settings = Settings(
        data_dir=shared_dir / "data",
        database_url=database_url,
        kek_file=shared_dir / "data" / "kek.bin",
        policy_file=REPO / "policies" / "default.yaml",
        run_worker=False,
    )
    signer = SignerProcess(settings).start()
    try:
        initialise(settings, wallet=WALLET, policy_file=settings.policy_file, actor="test")
        runtime = Runtime.open(settings, chain=FakeChain())
        try:
            fund_wallet(runtime)
            yield runtime, signer
        finally:
            runtime.close()
    finally:
        signer.stop()


def mode(path: Path) -> int:
    return stat.S_IMODE(path.lstat().st_mode)


def test_the_signer_files_and_socket_are_its_own(
    separate: tuple[Runtime, SignerProcess], shared_dir: Path
) -> None:
    runtime, _ = separate
    signer_dir = runtime.settings.signer_path
    assert mode(signer_dir) == 0o700
    assert mode(signer_dir / KEY_FILE) == 0o600
    assert mode(signer_dir / LEDGER_FILE) == 0o600
    assert stat.S_ISSOCK(runtime.settings.signer_socket.lstat().st_mode)
    assert mode(runtime.settings.signer_socket) == 0o600


@pytest.mark.skipif(os.geteuid() != 0, reason="running as another user needs root")
def test_another_os_user_can_neither_read_the_key_nor_reach_the_socket(
    separate: tuple[Runtime, SignerProcess], shared_dir: Path
) -> None:
    """The API host's user (here `nobody`) gets nothing from the signer's directory."""
    runtime, _ = separate
    control = shared_dir / "control.txt"
    control.write_text("readable")
    control.chmod(0o644)
    probe = (
        "import socket, sys\n"
        "print(open(sys.argv[1]).read())\n"  # the path itself is open to this user
        "for attempt in ('key', 'socket'):\n"
        "    try:\n"
        "        if attempt == 'key':\n"
        "            open(sys.argv[2], 'rb').read()\n"
        "        else:\n"
        "            s = socket.socket(socket.AF_UNIX)\n"
        "            s.connect(sys.argv[3])\n"
        "        print(attempt, 'OPEN')\n"
        "    except PermissionError:\n"
        "        print(attempt, 'refused')\n"
    )
    result = subprocess.run(
        [
            "/usr/bin/python3",  # the system interpreter: the venv's lives under /root
            "-c",
            probe,
            str(control),
            str(runtime.settings.signer_path / KEY_FILE),
            str(runtime.settings.signer_socket),
        ],
        user="nobody",
        capture_output=True,
        text=True,
        check=True,
        cwd="/",
        env={"PATH": os.environ.get("PATH", "")},
    )
    assert result.stdout.split("\n")[:3] == ["readable", "key refused", "socket refused"]


SERVICE_PROCESS_PROBE = """
import gc
from tests.fakechain import FakeChain
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.config import Settings
from walletsvc.domain.coinselect import COINBASE_MATURITY
from walletsvc.keys.hd import AccountKeys
from walletsvc.keys.keystore import SeedSecret
from walletsvc.keys.sealing import AesGcmSeedVault

runtime = Runtime.open(Settings(), chain=FakeChain())
runtime.signer.status()
runtime.signer.new_epoch("pool-hot", 1)  # asks for the seed's epoch: gets its xpub only
runtime.tick()
gc.collect()
kinds = (AesGcmSeedVault, SeedSecret, AccountKeys)
print(sorted(type(o).__name__ for o in gc.get_objects() if isinstance(o, kinds)))
runtime.close()
"""


def test_the_service_process_holds_no_seed(separate: tuple[Runtime, SignerProcess]) -> None:
    """A fresh service process, wired as `serve` wires it, after talking to the signer: no
    seed vault, no decrypted seed and no private account key in its memory."""
    runtime, _ = separate
    probe = subprocess.run(
        [sys.executable, "-c", SERVICE_PROCESS_PROBE],
        env=service_env(runtime.settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
        check=True,
    )
    assert probe.stdout.strip().splitlines()[-1] == "[]"
    with runtime.db.read() as uow:
        wallet = uow.wallets.by_name(WALLET)
        assert wallet is not None
        epoch = uow.key_epochs.of_wallet(wallet.id, 1)
        assert epoch.encrypted_seed is None and epoch.account_xpub.startswith("tpub")


def status_of(runtime: Runtime, withdrawal_id: str) -> str:
    with runtime.db.read() as uow:
        row = uow.withdrawals.get(withdrawal_id)
        assert row is not None
        return row.status


def test_a_killed_signer_makes_the_service_wait_and_forgets_nothing(
    separate: tuple[Runtime, SignerProcess],
) -> None:
    runtime, signer = separate
    paid = [payout("w-before-kill", 1_000_000)]
    # The coin the worker's selection (largest first, then by txid) reaches last: the service
    # never learns it was spent here, so the worker must not plan with it below. (The first
    # coin in the database's order was the worker's pick whenever its txid sorted first.)
    mature = [c for c in coins(runtime) if c.confirmations >= COINBASE_MATURITY]
    available = sorted(mature, key=lambda c: (-c.amount_sat, c.txid, c.vout))[::-1]
    plan = plan_paying(runtime, paid, using=available[:1])
    first = runtime.signer.sign(wallet=WALLET, kind="payout", plan=plan, approved=paid)

    signer.kill()
    with pytest.raises(DependencyUnavailable, match="unreachable"):
        runtime.signer.sign(wallet=WALLET, kind="payout", plan=plan, approved=paid)
    waiting = request_withdrawal(
        runtime.db,
        runtime.tags,
        body=WithdrawalInput(WALLET, external_destination("waits")[0], 1_000_000, "r1"),
        idempotency_key="k1",
        token_id="t1",
        actor="token:t1",
    ).withdrawal_id
    runtime.background_pass()  # the signer is down: the payout waits, nothing freezes
    assert runtime._trouble == "signer"  # logged once as "signer unavailable"
    assert status_of(runtime, waiting) == "approved"
    assert readiness(runtime)[1]["checks"]["signer"] == "unavailable"
    with runtime.db.read() as uow:
        assert uow.freezes.active(None) == []

    signer.start()
    runtime.tick()
    assert status_of(runtime, waiting) == "broadcast"
    assert runtime.signer.sign(wallet=WALLET, kind="payout", plan=plan, approved=paid) == first
    with pytest.raises(SigningRefused, match="never twice"):
        other = plan_paying(runtime, paid, using=available[1:2])
        runtime.signer.sign(wallet=WALLET, kind="payout", plan=other, approved=paid)


def test_a_tampered_ledger_stops_the_signer_at_start(
    separate: tuple[Runtime, SignerProcess],
) -> None:
    runtime, signer = separate
    signer.stop()
    ledger = runtime.settings.signer_path / LEDGER_FILE
    lines = ledger.read_bytes().splitlines(keepends=True)
    ledger.write_bytes(b"".join(lines[:-1]))  # the last record (the wallet's seed) deleted
    refused = subprocess.run(
        [sys.executable, "-m", "walletsvc.cli.main", "signer"],
        env=service_env(runtime.settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 3
    assert "SIGNER REFUSES TO START" in refused.stderr and "truncated" in refused.stderr
    assert not runtime.settings.signer_socket.exists()


def test_freeze_with_the_database_down_still_stops_the_signer(
    separate: tuple[Runtime, SignerProcess],
) -> None:
    runtime, _ = separate
    down = runtime.settings.model_copy(
        update={"database_url": "postgresql+psycopg://nobody@127.0.0.1:9/none?connect_timeout=2"}
    )
    result = run_cli(down, "freeze", "--reason", "db is on fire", "--wallet", WALLET)
    assert result.returncode != 0
    assert "signer frozen" in result.stdout
    assert SignerClient(runtime.settings).status()["frozen"] == {WALLET: "db is on fire"}
    paid = [payout("w-after-freeze", 1_000_000)]
    plan = plan_paying(runtime, paid, using=coins(runtime)[:1])
    with pytest.raises(Frozen, match="frozen in the signer"):
        runtime.signer.sign(wallet=WALLET, kind="payout", plan=plan, approved=paid)


def test_init_gives_the_signer_its_own_copy_of_the_cold_destination(
    shared_dir: Path, database_url: str
) -> None:
    """`walletsvc init --cold-xpub` on the embedded default: the signer's ledger gets the
    destination locally, then a signer child process makes the wallet's seed."""
    from embit.networks import NETWORKS

    from tests.treasury.test_sweeps import cold_account

    settings = Settings(
        data_dir=shared_dir / "data",
        database_url=database_url,
        kek_file=shared_dir / "data" / "kek.bin",
        policy_file=REPO / "policies" / "default.yaml",
    )
    tpub = cold_account().to_base58(NETWORKS["regtest"]["xpub"])
    result = run_cli(settings, "init", "--cold-xpub", tpub)
    assert result.returncode == 0, result.stderr
    assert "recovery words" not in result.stdout  # no seed material leaves the signer
    core = open_core(settings)
    try:
        assert core.state.cold[WALLET].startswith("wpkh(tpub")
        assert core.state.epochs_of(WALLET) == [1]
    finally:
        close_core(core)
    assert not settings.signer_socket.exists()  # the child signer stopped with init
