"""Run Alembic migrations programmatically (``walletsvc migrate``, tests, ``make run``)."""

from __future__ import annotations

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


def upgrade(url: str, revision: str = "heads") -> None:
    command.upgrade(alembic_config(url), revision)


def check(url: str) -> None:
    """Fail if the models and the migrations disagree (alembic check)."""
    command.check(alembic_config(url))
