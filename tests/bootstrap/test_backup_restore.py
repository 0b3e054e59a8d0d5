"""The disaster-recovery drill of docs/runbook.md: ``walletsvc backup`` while the service runs,
the machine lost, ``walletsvc restore`` onto a fresh data directory and an empty database, and
the restored service shows the same addresses, balances and pending payouts, and pays them.
And the last resort: the recovery words alone and a rescan of the chain.

The embedded chain stands for the Bitcoin network: it survives the lost machine, so the
restored service opens the same chain directory.
"""

from __future__ import annotations

import json
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from bip_utils import Bip39MnemonicGenerator, Bip39WordsNum
from fastapi.testclient import TestClient

from tests.conftest import (
    POSTGRES_URL,
    REPO,
    RUNNING_SIGNERS,
    WALLET,
    _with_database,
    auth,
    fund_wallet,
)
from tests.helpers import (
    embedded,
    external_destination,
    initialised,
    opened,
    request_payout,
    run_cli,
    verify_audit,
)
from walletsvc.api.app import create_app
from walletsvc.bootstrap.setup import initialise
from walletsvc.config import Settings
from walletsvc.db.repositories.withdrawals import HeldWindow
from walletsvc.devchain.embedded import EmbeddedChain
from walletsvc.domain.withdrawal import HOLDING_STATUSES
from walletsvc.signer.server import SignerServer
from walletsvc.wallets.balances import wallet_balances
from walletsvc.wallets.service import get_wallet

pytestmark = pytest.mark.kernel


@pytest.fixture
def fresh_database_url(database_url: str, tmp_path: Path) -> Iterator[str]:
    """An empty database of the same kind as ``database_url`` (no schema at all)."""
    if database_url.startswith("sqlite"):
        yield f"sqlite:///{tmp_path / 'restored' / 'walletsvc.db'}"
        return
    name = f"walletsvc_r_{uuid.uuid4().hex[:12]}"
    admin = sa.create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    yield _with_database(POSTGRES_URL, name)
    with admin.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    admin.dispose()


def fresh_settings(tmp_path: Path, database_url: str) -> Settings:
    data = tmp_path / "restored"
    return Settings(
        data_dir=data,
        database_url=database_url,
        kek_file=data / "kek.bin",
        policy_file=REPO / "policies" / "default.yaml",
        run_worker=False,
    )


def view(client: TestClient, token: str) -> dict[str, Any]:
    """What the drill compares: addresses, balances, payouts (with their statuses)."""
    wallet = client.get(f"/v1/wallets/{WALLET}", headers=auth(token)).json()
    addresses = client.get(f"/v1/wallets/{WALLET}/deposit-addresses", headers=auth(token)).json()
    payouts = client.get("/v1/withdrawals", headers=auth(token)).json()["withdrawals"]
    return {"wallet": wallet, "addresses": addresses, "payouts": payouts}


@pytest.mark.parametrize("fmt", ["native", "json"])
def test_backup_and_restore_drill(
    settings: Settings, fresh_database_url: str, tmp_path: Path, fmt: str
) -> None:
    """``native``: SQLite's backup API or pg_dump; ``json``: the logical export."""
    token = initialised(settings)
    with opened(settings) as runtime:
        chain = embedded(runtime)
        fund_wallet(runtime)
        with TestClient(create_app(settings, runtime=runtime)) as client:
            paid = request_payout(
                client, token, key="paid", destination=external_destination("m1")[0]
            )
            runtime.tick()
            chain.mine(1)
            runtime.tick()
            assert (
                client.get(f"/v1/withdrawals/{paid.json()['id']}", headers=auth(token)).json()[
                    "status"
                ]
                == "confirmed"
            )
            # Two payouts accepted and not yet signed when the machine is lost.
            for key in ("pending-1", "pending-2"):
                made = request_payout(
                    client, token, key=key, destination=external_destination(key)[0]
                )
                assert made.json()["status"] == "approved", made.text
            before = view(client, token)

            backup_dir = tmp_path / "backup"
            chosen = () if fmt == "native" else ("--format", "json")
            made = run_cli(settings, "backup", "--to", str(backup_dir), *chosen)
            assert made.returncode == 0, made.stderr
            manifest = json.loads(made.stdout)
            native = (
                "walletsvc.db"
                if settings.database_url.startswith("sqlite")
                else ("database.pgdump")
            )
            assert manifest["database"]["file"] == (native if fmt == "native" else "database.json")
            assert "database:" in made.stderr  # progress lines, on stderr
            assert manifest["kek_included"] is True  # the development KEK sits in the data dir
            # The seeds live in the signer's ledger, sealed under its key: both are kept.
            assert {f["path"] for f in manifest["key_files"]} >= {
                "kek.bin",
                "signer/signer.key",
                "signer/ledger.jsonl",
            }
            assert not any(f["path"].startswith("chain") for f in manifest["key_files"])

    # The machine is gone. A fresh data directory and an empty database:
    restored_settings = fresh_settings(tmp_path, fresh_database_url)
    assert not restored_settings.data_dir.exists()
    done = run_cli(restored_settings, "restore", "--from", str(backup_dir))
    assert done.returncode == 0, done.stderr
    assert "restore done" in done.stderr
    # A second restore onto the same place is refused: restores never merge.
    again = run_cli(restored_settings, "restore", "--from", str(backup_dir))
    assert again.returncode != 0 and "fresh data directory" in again.stderr

    network = EmbeddedChain(settings.chain_dir)  # the same Bitcoin network
    # The restored signer serves from the restored files: its seeds, its ledger.
    with SignerServer(restored_settings), opened(restored_settings, chain=network) as runtime:
        with TestClient(create_app(restored_settings, runtime=runtime)) as client:
            assert view(client, token) == before  # the API token works too
            # The velocity counters came back equal to the rows (JSON: rebuilt by the
            # triggers as the withdrawals went in; native: copied with them).
            with runtime.db.read() as uow:
                wallet_id = get_wallet(uow, WALLET).id
                ever = [HeldWindow(datetime(2000, 1, 1, tzinfo=UTC))]
                held = [s.value for s in HOLDING_STATUSES]
                counted = uow.withdrawals.counted_totals_since(wallet_id, ever)
                assert counted == uow.withdrawals.held_totals_since(wallet_id, held, ever)
                assert counted[0][1] == 3
            runtime.tick()  # the restored keys sign the pending payouts
            statuses = {
                w["id"]: w["status"]
                for w in client.get("/v1/withdrawals", headers=auth(token)).json()["withdrawals"]
            }
        assert sorted(statuses.values()) == ["broadcast", "broadcast", "confirmed"]
        assert verify_audit(runtime).ok


def test_a_tampered_backup_is_refused(settings: Settings, tmp_path: Path) -> None:
    initialised(settings)
    backup_dir = tmp_path / "backup"
    assert run_cli(settings, "backup", "--to", str(backup_dir)).returncode == 0
    key_file = backup_dir / "keys" / "kek.bin"
    key_file.write_bytes(os.urandom(32))
    target = fresh_settings(tmp_path, f"sqlite:///{tmp_path / 'restored' / 'walletsvc.db'}")
    refused = run_cli(target, "restore", "--from", str(backup_dir))
    assert refused.returncode != 0
    assert "does not match the manifest" in refused.stderr
    assert not (target.data_dir / "walletsvc.db").exists()


def test_restore_from_the_recovery_words_alone_finds_the_coins(
    settings: Settings, tmp_path: Path
) -> None:
    # The wallet's seed as its operator wrote it down: imported into the signer on the signer's
    # host (the running test signer's core here), then the wallet takes its keys.
    words = str(Bip39MnemonicGenerator().FromWordsNumber(Bip39WordsNum.WORDS_NUM_24))
    running = RUNNING_SIGNERS[settings.signer_path]
    with running.core.lock:
        imported = running.core.import_words(WALLET, words)
    result = initialise(settings, wallet=WALLET, policy_file=settings.policy_file, actor="test")
    assert result.wallet is not None
    assert result.wallet.account_xpub == imported["account_xpub"]
    with opened(settings) as runtime:
        fund_wallet(runtime, blocks=120)
        with runtime.db.read() as uow:
            wallet = uow.wallets.by_name(WALLET)
            assert wallet is not None
            balances = wallet_balances(uow, wallet, min_confirmations=1)
    assert balances.confirmed_sat > 0

    # Seeds are imported with the signer's files and the signer stopped: never under a
    # running signer (two writers of its ledger), never over its socket.
    busy = run_cli(settings, "restore", "--words", "--wallet", "other", stdin=words + "\n")
    assert busy.returncode != 0 and "signer stopped" in busy.stderr
    assert words not in busy.stdout + busy.stderr

    target = fresh_settings(tmp_path, f"sqlite:///{tmp_path / 'restored' / 'walletsvc.db'}")
    target.data_dir.mkdir(parents=True)
    # The new machine follows the same network: its chain directory is the old one.
    (target.data_dir / "chain").symlink_to(settings.chain_dir)
    # The words are read from stdin, never from the command line; the rescan reports progress.
    restored = run_cli(target, "restore", "--words", "--wallet", WALLET, stdin=words + "\n")
    assert restored.returncode == 0, restored.stderr
    assert "rescan: block 120 of 120" in restored.stderr
    assert words not in restored.stdout + restored.stderr
    assert result.wallet.account_xpub in restored.stdout

    with opened(target) as runtime, runtime.db.read() as uow:
        wallet = uow.wallets.by_name(WALLET)
        assert wallet is not None
        epoch = uow.key_epochs.find(wallet.id, 1)
        assert epoch is not None and epoch.account_xpub == result.wallet.account_xpub
        assert wallet_balances(uow, wallet, min_confirmations=1) == balances
