"""The dev bootstrap's staff: people can log in to the console with them (dev only)."""

from __future__ import annotations

import json

import pyotp
import pytest
from typer.testing import CliRunner

from tests.conftest import WALLET
from tests.fakechain import FakeChain
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.bootstrap.setup import dev_bootstrap
from walletsvc.cli.main import _print_newcomer_banner, app
from walletsvc.config import Settings
from walletsvc.governance.sessions import login


def test_dev_approvers_can_log_in_and_the_banner_shows_the_console_not_secrets(
    settings: Settings, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    creds = dev_bootstrap(settings, FakeChain(), wallet=WALLET, actor="test").values
    again = dev_bootstrap(settings, FakeChain(), wallet=WALLET, actor="test").values
    assert again["staff"] == creds["staff"]  # made once, kept
    staff = creds["staff"]
    assert {name: info["role"] for name, info in staff.items()} == {
        "alice": "approver",
        "bob": "approver",
        "olga": "operator",
    }
    runtime = Runtime.open(settings, chain=FakeChain())
    try:
        session = login(
            runtime.db,
            runtime.tags,
            runtime.signer,
            runtime.settings,
            username="alice",
            password=staff["alice"]["password"],
            totp=pyotp.TOTP(staff["alice"]["totp_secret"]).now(),
        )
        assert session.principal.groups == frozenset({"treasury"})
    finally:
        runtime.close()

    _print_newcomer_banner(creds, settings)
    banner = capsys.readouterr().out
    assert f"{creds['base_url']}/console" in banner and "alice (approver)" in banner
    for info in staff.values():
        assert info["password"] not in banner and info["totp_secret"] not in banner

    monkeypatch.setenv("WALLETSVC_DATA_DIR", str(settings.data_dir))
    code = CliRunner().invoke(app, ["dev", "totp", "bob"])
    assert code.exit_code == 0
    assert pyotp.TOTP(staff["bob"]["totp_secret"]).verify(code.output.strip(), valid_window=1)
    stored = json.loads((settings.data_dir / "dev-credentials.json").read_text())
    assert stored["staff"] == staff
