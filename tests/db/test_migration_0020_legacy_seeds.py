"""Migration 0020: seeds of key epochs made before the signer move into it.

A database from before revision 0015 holds each epoch's seed sealed under the service's KEK in
``key_epochs.encrypted_seed``, which the signer cannot open. The upgrade opens it one last time
and imports its words into the signer (genesis open, the derived account xpub checked against
the row's), then clears the column: the seed is in no table, and the wallet's coins of that
epoch are signed for by the signer. With genesis closed the upgrade is refused until the
operator imports the words locally on the signer's host (docs/runbook.md).
"""

from __future__ import annotations

import dataclasses
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic import command
from fastapi.testclient import TestClient

from tests.conftest import REPO, RUNNING_SIGNERS, WALLET, fund_wallet
from tests.fakechain import FakeChain
from tests.helpers import (
    decode_tx,
    external_destination,
    request_payout,
    run_cli,
    show_withdrawal,
)
from walletsvc.api.app import create_app
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.bootstrap.seed_import import SeedImporter
from walletsvc.bootstrap.setup import initialise
from walletsvc.config import Settings
from walletsvc.db.migrate import alembic_config, upgrade
from walletsvc.domain.access import SCOPES
from walletsvc.domain.errors import Forbidden, SigningRefused
from walletsvc.governance.tokens import create_token
from walletsvc.keys.kek import Kek, create_dev_kek, load_kek
from walletsvc.keys.keystore import NewSeed, generate_seed
from walletsvc.signer.client import SignerClient
from walletsvc.signer.errors import SignerError
from walletsvc.signer.server import close_core, open_core
from walletsvc.wallets.service import get_wallet, issue_address

BEFORE = "0018_velocity_buckets"


def service_kek(settings: Settings) -> Kek:
    if not settings.kek_path.exists():
        settings.kek_path.parent.mkdir(parents=True, exist_ok=True)
        create_dev_kek(settings.kek_path)
    return load_kek(settings.kek_path)


def legacy_seed(settings: Settings, wallet: str = WALLET, epoch: int = 1) -> NewSeed:
    """A seed as the service made them before the signer: sealed under the service's KEK."""
    vault = service_kek(settings).seed_vault()
    return generate_seed(vault, wallet=wallet, epoch=epoch, network=settings.network)


def insert_legacy_wallet(settings: Settings, seed: NewSeed) -> None:
    engine = sa.create_engine(settings.database_url)
    now = datetime.now(UTC)
    wallet_id = str(uuid.uuid4())
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO wallets (id, name, network, current_epoch, created_at)"
                " VALUES (:id, :name, :network, :epoch, :now)"
            ),
            {
                "id": wallet_id,
                "name": seed.wallet,
                "network": seed.network.value,
                "epoch": seed.epoch,
                "now": now,
            },
        )
        conn.execute(
            sa.text(
                "INSERT INTO key_epochs (id, wallet_id, epoch, encrypted_seed, account_xpub,"
                " master_fingerprint, next_receive_index, next_change_index, created_at)"
                " VALUES (:id, :wallet_id, :epoch, :sealed, :xpub, :fingerprint, 0, 0, :now)"
            ),
            {
                "id": str(uuid.uuid4()),
                "wallet_id": wallet_id,
                "epoch": seed.epoch,
                "sealed": seed.encrypted.to_string(),
                "xpub": seed.account_xpub,
                "fingerprint": seed.master_fingerprint,
                "now": now,
            },
        )
    engine.dispose()


def stored_seeds(settings: Settings) -> list[str | None]:
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as conn:
        values = conn.execute(sa.text("SELECT encrypted_seed FROM key_epochs")).scalars().all()
    engine.dispose()
    return list(values)


def migrate_with_importer(settings: Settings) -> None:
    importer = SeedImporter(settings)
    try:
        upgrade(settings.database_url, seed_import=importer)
    finally:
        importer.close()


def close_genesis(settings: Settings) -> None:
    signer = SignerClient(settings)
    try:
        assert signer.close_genesis() is False
    finally:
        signer.close()


def test_a_legacy_seed_moves_into_the_signer_and_the_wallet_then_pays(
    settings: Settings,
) -> None:
    command.downgrade(alembic_config(settings.database_url), BEFORE)
    seed = legacy_seed(settings)
    words = " ".join(seed.mnemonic.reveal())
    insert_legacy_wallet(settings, seed)

    with pytest.raises(RuntimeError, match="hold a seed sealed under the KEK"):
        upgrade(settings.database_url)  # no importer: refused, nothing lost
    assert stored_seeds(settings) == [seed.encrypted.to_string()]

    # `walletsvc init` (what `make run` runs on an old data directory) migrates with importers.
    result = initialise(settings, wallet=WALLET, policy_file=settings.policy_file, actor="test")
    assert result.wallet is None  # the wallet exists: it keeps its keys
    assert stored_seeds(settings) == [None]
    engine = sa.create_engine(settings.database_url)
    with engine.connect() as conn:
        dump = " ".join(
            str(value)
            for table in ("key_epochs", "audit_events")
            for row in conn.execute(sa.text(f"SELECT * FROM {table}"))
            for value in row
        )
    engine.dispose()
    assert seed.encrypted.to_string() not in dump and words not in dump

    chain = FakeChain()
    runtime = Runtime.open(settings, chain=chain)
    try:
        assert runtime.signer.status()["wallets"] == {WALLET: [1]}
        with runtime.db.write() as uow:  # a deposit address of the legacy epoch's xpub
            issue_address(uow, get_wallet(uow, WALLET), label=None, actor="test")
        fund_wallet(runtime)
        token = create_token(
            runtime.db, runtime.tags, name="engine", scopes=sorted(SCOPES), actor="test"
        ).secret
        address, script = external_destination("legacy payee")
        with TestClient(create_app(settings, runtime=runtime)) as client:
            response = request_payout(
                client, token, key="legacy-1", destination=address, amount_sat=2_000_000
            )
            assert response.status_code == 201 and response.json()["status"] == "approved"
            # The signer signs with the imported seed (libbitcoinkernel checks every input).
            report = runtime.worker.run_once()
            assert len(report.signed_txids) == 1
            chain.mine(1)
            runtime.tick()
            paid = show_withdrawal(client, token, response.json()["id"])
        assert paid["status"] == "confirmed" and paid["txid"] == report.signed_txids[0]
        tx = decode_tx(paid["raw_tx"])
        assert (script, 2_000_000) in [(bytes(o.scriptPubKey), int(o.nValue)) for o in tx.vout]
    finally:
        runtime.close()


def test_with_genesis_closed_the_upgrade_is_refused_until_the_words_are_imported_locally(
    settings: Settings,
) -> None:
    command.downgrade(alembic_config(settings.database_url), BEFORE)
    seed = legacy_seed(settings)
    words = " ".join(seed.mnemonic.reveal())
    insert_legacy_wallet(settings, seed)
    close_genesis(settings)

    with pytest.raises(RuntimeError, match=r"genesis is closed.*walletsvc signer import-seed"):
        migrate_with_importer(settings)
    assert stored_seeds(settings) == [seed.encrypted.to_string()]  # nothing lost

    # The runbook's path: on the signer's host, `walletsvc signer import-seed` (local).
    core = RUNNING_SIGNERS[settings.signer_path].core
    with core.lock:
        with pytest.raises(SignerError, match="not the"):
            core.import_legacy_words(WALLET, 1, words, legacy_seed(settings).account_xpub)
        keys = core.import_legacy_words(WALLET, 1, words, seed.account_xpub)
    assert keys["account_xpub"] == seed.account_xpub

    migrate_with_importer(settings)  # the same seed again: a no-op in the signer
    assert stored_seeds(settings) == [None]


def test_a_ciphertext_that_derives_another_xpub_than_its_row_stops_the_upgrade(
    settings: Settings,
) -> None:
    """A row whose xpub is not its seed's (an edited database): the signer refuses the words
    and the upgrade stops with the ciphertext still in place, the signer unchanged."""
    command.downgrade(alembic_config(settings.database_url), BEFORE)
    seed, other = legacy_seed(settings), legacy_seed(settings)
    insert_legacy_wallet(settings, dataclasses.replace(seed, account_xpub=other.account_xpub))

    with pytest.raises(RuntimeError, match=r"cannot move into the signer.*derive account xpub"):
        migrate_with_importer(settings)
    assert stored_seeds(settings) == [seed.encrypted.to_string()]
    signer = SignerClient(settings)
    try:
        assert signer.status()["wallets"] == {}
    finally:
        signer.close()


def test_import_is_refused_after_genesis(settings: Settings) -> None:
    seed = legacy_seed(settings, wallet="old-hot")
    words = " ".join(seed.mnemonic.reveal())
    close_genesis(settings)
    signer = SignerClient(settings)
    try:
        with pytest.raises(Forbidden, match="only while genesis is open"):
            signer.import_seed(
                wallet="old-hot", epoch=1, words=words, account_xpub=seed.account_xpub
            )
        assert "old-hot" not in signer.status()["wallets"]
    finally:
        signer.close()


def test_words_that_derive_another_xpub_are_refused_and_the_same_seed_is_idempotent(
    settings: Settings,
) -> None:
    seed, other = legacy_seed(settings, wallet="old-hot"), legacy_seed(settings, wallet="old-hot")
    words, other_words = " ".join(seed.mnemonic.reveal()), " ".join(other.mnemonic.reveal())
    signer = SignerClient(settings)
    try:
        with pytest.raises(SigningRefused, match="derive account xpub"):
            signer.import_seed(
                wallet="old-hot", epoch=1, words=other_words, account_xpub=seed.account_xpub
            )
        assert "old-hot" not in signer.status()["wallets"]

        first = signer.import_seed(
            wallet="old-hot", epoch=1, words=words, account_xpub=seed.account_xpub
        )
        records = signer.status()["records"]
        again = signer.import_seed(
            wallet="old-hot", epoch=1, words=words, account_xpub=seed.account_xpub
        )
        assert again == first and first.account_xpub == seed.account_xpub
        assert signer.status()["records"] == records  # nothing new recorded
        with pytest.raises(SigningRefused, match="another seed"):
            signer.import_seed(
                wallet="old-hot", epoch=1, words=other_words, account_xpub=other.account_xpub
            )
        close_genesis(settings)  # a retry of an import that landed still answers the same
        assert (
            signer.import_seed(
                wallet="old-hot", epoch=1, words=words, account_xpub=seed.account_xpub
            )
            == first
        )
    finally:
        signer.close()


def test_the_local_import_seed_command_checks_the_xpub_and_never_echoes_the_words(
    tmp_path: Path,
) -> None:
    """`walletsvc signer import-seed`: the runbook's path once genesis is closed, on the
    signer's host with the signer stopped, the words on stdin."""
    signer_host = Settings(
        data_dir=tmp_path / "data",
        database_url=f"sqlite:///{tmp_path / 'unused.db'}",
        kek_file=tmp_path / "data" / "kek.bin",
        policy_file=REPO / "policies" / "default.yaml",
        run_worker=False,
    )
    seed, other = legacy_seed(signer_host, epoch=2), legacy_seed(signer_host, epoch=2)
    words = " ".join(seed.mnemonic.reveal())
    args = ("signer", "import-seed", "--wallet", WALLET, "--epoch", "2", "--xpub")

    wrong = run_cli(signer_host, *args, other.account_xpub, stdin=words + "\n")
    assert wrong.returncode != 0 and "not the" in wrong.stderr
    done = run_cli(signer_host, *args, seed.account_xpub, stdin=words + "\n")
    assert done.returncode == 0, done.stderr
    for result in (wrong, done):
        assert words not in result.stdout + result.stderr

    core = open_core(signer_host)
    try:
        assert core.state.seeds[(WALLET, 2)].account_xpub == seed.account_xpub
        assert core.state.epochs_of(WALLET) == [2]
    finally:
        close_core(core)


def test_walletsvc_migrate_on_an_old_data_directory_starts_the_dev_signer_and_moves_the_seed(
    tmp_path: Path, database_url: str
) -> None:
    """`make run` on an old data directory: `walletsvc migrate` runs with no signer up; it
    starts the dev signer because a seed has to move, and leaves none behind."""
    service = Settings(
        data_dir=tmp_path / "data",
        database_url=database_url,
        kek_file=tmp_path / "data" / "kek.bin",
        policy_file=REPO / "policies" / "default.yaml",
        run_worker=False,
    )
    command.downgrade(alembic_config(database_url), BEFORE)
    seed = legacy_seed(service)
    insert_legacy_wallet(service, seed)

    migrated = run_cli(service, "migrate")
    assert migrated.returncode == 0, migrated.stderr
    assert stored_seeds(service) == [None]
    core = open_core(service)  # the dev signer stopped: its files are free again
    try:
        assert core.state.seeds[(WALLET, 1)].account_xpub == seed.account_xpub
    finally:
        close_core(core)
