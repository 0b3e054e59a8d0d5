"""Run Alembic migrations programmatically (``walletsvc migrate``, tests, ``make run``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from alembic import command
from alembic.config import Config

from walletsvc.shipped import migrations_dir


def alembic_config(url: str) -> Config:
    # No alembic.ini and no pyproject.toml: an installed walletsvc has neither, and upgrading or
    # checking needs nothing from them (the [tool.alembic] section serves `alembic revision`).
    cfg = Config()
    # ConfigParser interpolation: a literal % in the path must be doubled.
    cfg.set_main_option("script_location", str(migrations_dir()).replace("%", "%%"))
    cfg.attributes["url"] = url
    return cfg


TotpImport = Callable[[dict[str, Any]], None]
SeedImport = Callable[[dict[str, Any]], None]


def upgrade(
    url: str,
    revision: str = "heads",
    *,
    totp_import: TotpImport | None = None,
    seed_import: SeedImport | None = None,
) -> None:
    """``totp_import`` moves a member's TOTP secret from the database into the signer
    (migration 0016; walletsvc.bootstrap.staff_import); only needed for databases made
    before it that hold staff. ``seed_import`` moves a key epoch's KEK-sealed seed into the
    signer (migration 0020; walletsvc.bootstrap.seed_import); only needed for databases
    with wallets made before revision 0015."""
    cfg = alembic_config(url)
    if totp_import is not None:
        cfg.attributes["totp_import"] = totp_import
    if seed_import is not None:
        cfg.attributes["seed_import"] = seed_import
    command.upgrade(cfg, revision)


def check(url: str) -> None:
    """Fail if the models and the migrations disagree (alembic check)."""
    command.check(alembic_config(url))
