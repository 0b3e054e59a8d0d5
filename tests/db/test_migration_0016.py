"""Migration 0016: staff TOTP secrets move from the database into the signer.

A database at revision 0015 holds each member's secret sealed under the service's KEK. The
upgrade unseals it one last time, enrols the member in the signer with it (genesis open),
disables there a member disabled here, and drops the column: afterwards the secret is in no
table, and the member's authenticator still works, now checked by the signer.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pyotp
import pytest
import sqlalchemy as sa
from alembic import command

from tests.conftest import SIGNER_CLOCK
from walletsvc.bootstrap.staff_import import TotpImporter
from walletsvc.config import Settings
from walletsvc.db.migrate import alembic_config, upgrade
from walletsvc.domain.errors import Forbidden
from walletsvc.keys.kek import Kek, create_dev_kek, load_kek
from walletsvc.signer.client import SignerClient

BEFORE = "0015_signer_seeds_out_of_db"


def _insert_member(settings: Settings, staff_id: str, secret: str, disabled: bool) -> None:
    sealer = create_or_load_kek(settings).totp_sealer()
    engine = sa.create_engine(settings.database_url)
    with engine.begin() as conn:
        conn.execute(
            sa.text(
                "INSERT INTO staff (id, username, role, groups, password_hash, totp_secret_enc,"
                " failed_attempts, disabled_at, created_at, mac) VALUES (:id, :username,"
                " 'approver', :groups, 'x', :sealed, 0, :disabled, :now, 'tag')"
            ),
            {
                "id": staff_id,
                "username": staff_id.replace("id-", ""),
                "groups": json.dumps(["treasury"]),
                "sealed": sealer.seal(staff_id, secret),
                "disabled": datetime.now(UTC) if disabled else None,
                "now": datetime.now(UTC),
            },
        )
    engine.dispose()


def create_or_load_kek(settings: Settings) -> Kek:
    if not settings.kek_path.exists():
        settings.kek_path.parent.mkdir(parents=True, exist_ok=True)
        create_dev_kek(settings.kek_path)
    return load_kek(settings.kek_path)


def test_secrets_move_into_the_signer_and_leave_the_database(settings: Settings) -> None:
    command.downgrade(alembic_config(settings.database_url), BEFORE)
    alice, dora = pyotp.random_base32(), pyotp.random_base32()
    _insert_member(settings, "id-alice", alice, disabled=False)
    _insert_member(settings, "id-dora", dora, disabled=True)

    with pytest.raises(RuntimeError, match="hold a TOTP secret"):
        upgrade(settings.database_url)  # no importer: refused, nothing lost
    importer = TotpImporter(settings)
    try:
        upgrade(settings.database_url, totp_import=importer)
    finally:
        importer.close()

    engine = sa.create_engine(settings.database_url)
    with engine.connect() as conn:
        columns = {c["name"] for c in sa.inspect(conn).get_columns("staff")}
        rows = conn.execute(sa.text("SELECT * FROM staff")).all()
    engine.dispose()
    assert "totp_secret_enc" not in columns
    text = " ".join(str(v) for row in rows for v in row)
    assert alice not in text and dora not in text

    signer = SignerClient(settings)
    try:
        now = datetime.now(UTC)
        SIGNER_CLOCK.pinned = now
        assert signer.check_totp("id-alice", pyotp.TOTP(alice).at(now)) > 0
        with pytest.raises(Forbidden):  # disabled here, disabled there
            signer.check_totp("id-dora", pyotp.TOTP(dora).at(now))
    finally:
        signer.close()
