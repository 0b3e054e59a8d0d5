"""A CLI people enjoy: help without Python type names, the valid choices listed, a word when a
listing is empty, progress on long work, and actions audited under the operator's OS user."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import select
from typer.main import get_command
from typer.testing import CliRunner

from tests.helpers import run_cli
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.cli.main import app
from walletsvc.config import Settings
from walletsvc.db.models import AuditEvent
from walletsvc.domain.access import ROLES, SCOPES

PYTHON_TYPE = re.compile(r"<(bool|str|int|float|path|list\[[^\]]*\])>")


def every_command() -> Iterator[list[str]]:
    def walk(command: object, path: list[str]) -> Iterator[list[str]]:
        yield path
        for name, sub in getattr(command, "commands", {}).items():
            yield from walk(sub, [*path, name])

    yield from walk(get_command(app), [])


@pytest.mark.parametrize("command", list(every_command()), ids=" ".join)
def test_help_shows_no_python_types(command: list[str]) -> None:
    result = CliRunner().invoke(app, [*command, "--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert not PYTHON_TYPE.search(result.output), result.output


def test_help_lists_the_valid_choices() -> None:
    runner = CliRunner()
    token_help = runner.invoke(app, ["token", "create", "--help"], env={"COLUMNS": "400"}).output
    assert all(scope in token_help for scope in SCOPES)
    staff_help = runner.invoke(app, ["staff", "add", "--help"], env={"COLUMNS": "400"}).output
    assert all(role in staff_help for role in ROLES)


@pytest.fixture
def cli_env(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    s = runtime.settings
    monkeypatch.setenv("WALLETSVC_DATA_DIR", str(s.data_dir))
    monkeypatch.setenv("WALLETSVC_DATABASE_URL", s.database_url)
    monkeypatch.setenv("WALLETSVC_KEK_FILE", str(s.kek_path))
    return runtime


def test_empty_listings_say_so(cli_env: Runtime) -> None:
    runner = CliRunner()
    assert "no API tokens" in runner.invoke(app, ["token", "list"]).output
    assert "no staff yet" in runner.invoke(app, ["staff", "list"]).output
    assert "no webhooks" in runner.invoke(app, ["webhook", "list"]).output


def test_actions_are_audited_under_the_os_user(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SUDO_USER", raising=False)
    monkeypatch.setenv("LOGNAME", "carol")
    done = run_cli(runtime.settings, "freeze", "--reason", "drill")
    assert done.returncode == 0, done.stderr
    # Through `sudo -u walletsvc`, the person who ran sudo.
    monkeypatch.setenv("SUDO_USER", "dave")
    again = run_cli(runtime.settings, "freeze", "--reason", "second drill")
    assert again.returncode == 0, again.stderr
    with runtime.db.read() as uow:
        actors = uow.session.scalars(
            select(AuditEvent.actor).where(AuditEvent.action == "freeze.applied")
        ).all()
    assert actors == ["cli:carol", "cli:dave"]


def test_init_reports_its_steps(tmp_path: Path) -> None:
    fresh = Settings(data_dir=tmp_path / "fresh")
    done = run_cli(fresh, "init")
    assert done.returncode == 0, done.stderr
    steps = [line for line in done.stderr.splitlines() if line.startswith("… ")]
    assert steps[1:] == [
        "… database schema (migrations)",
        "… first policy",
        "… wallet pool-hot: seed, keys and first addresses",
    ]


def test_worker_refuses_the_embedded_chain(runtime: Runtime) -> None:
    done = run_cli(runtime.settings, "worker")
    assert done.returncode == 1
    assert "lives inside `walletsvc serve`" in done.stderr
