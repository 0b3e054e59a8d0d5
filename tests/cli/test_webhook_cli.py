"""`walletsvc webhook …` against a real database and KEK."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from tests.webhooks.receiver import ManualClock, loopback_receiver
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.cli.main import app
from walletsvc.governance.tokens import create_token
from walletsvc.webhooks.dispatcher import WebhookDispatcher
from walletsvc.webhooks.signatures import HEADER, verify

EVENT = ["--event", "freeze.applied"]


@pytest.fixture
def cli_env(runtime: Runtime, monkeypatch: pytest.MonkeyPatch) -> Runtime:
    s = runtime.settings
    monkeypatch.setenv("WALLETSVC_DATA_DIR", str(s.data_dir))
    monkeypatch.setenv("WALLETSVC_DATABASE_URL", s.database_url)
    monkeypatch.setenv("WALLETSVC_KEK_FILE", str(s.kek_path))
    return runtime


def test_add_list_deliver_and_remove(cli_env: Runtime) -> None:
    runner = CliRunner()
    assert "no webhooks" in runner.invoke(app, ["webhook", "list"]).output
    token = create_token(cli_env.db, cli_env.tags, name="engine", scopes=["read"], actor="t")
    with loopback_receiver(200) as receiver:
        added = runner.invoke(
            app,
            ["webhook", "add", "--token", token.token_id, "--url", receiver.url, *EVENT],
        )
        assert added.exit_code == 0, added.output
        webhook_id = added.output.split()[2]
        secret = added.output.strip().splitlines()[-1]
        assert secret.startswith("whsec_")
        assert runner.invoke(app, ["freeze", "--reason", "drill"]).exit_code == 0
        clock = ManualClock()
        WebhookDispatcher(cli_env.db, cli_env.webhook_secrets, clock=clock).run_once()
    [got] = receiver.received
    assert verify(secret, got.headers[HEADER], got.body, now=int(clock.now.timestamp()))
    listed = runner.invoke(app, ["webhook", "list"]).output
    assert webhook_id in listed and secret not in listed
    log = runner.invoke(app, ["webhook", "deliveries", webhook_id]).output
    assert "freeze.applied" in log and "delivered" in log
    assert runner.invoke(app, ["webhook", "remove", webhook_id]).exit_code == 0
    assert "no webhooks" in runner.invoke(app, ["webhook", "list"]).output


def test_bad_url_is_refused(cli_env: Runtime) -> None:
    token = create_token(cli_env.db, cli_env.tags, name="engine", scopes=["read"], actor="t")
    result = CliRunner().invoke(
        app, ["webhook", "add", "--token", token.token_id, "--url", "ftp://x.example/h"]
    )
    assert result.exit_code == 1
    assert "url must be an absolute http(s) URL" in result.output
