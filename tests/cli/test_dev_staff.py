"""The dev bootstrap's staff: people can log in to the console with them (dev only)."""

from __future__ import annotations

import json

import pyotp
import pytest
from typer.testing import CliRunner

from tests.conftest import WALLET
from tests.fakechain import FakeChain
from tests.governance_helpers import aligned_now, big_withdrawal, later
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.bootstrap.setup import dev_bootstrap
from walletsvc.cli.main import _print_newcomer_banner, app
from walletsvc.config import Settings
from walletsvc.governance import approvals
from walletsvc.governance.sessions import login
from walletsvc.payouts.intake import show_withdrawal


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


def test_the_dev_approvers_release_a_payout_above_the_tier(settings: Settings) -> None:
    """What docs/console.md promises under `make run`: alice and bob, as the dev bootstrap
    made them, log in and approve a payout above the tier (2 of treasury) until it is
    approved. Explicit moments: each member's code of one step logs in, of the next decides."""
    staff = dev_bootstrap(settings, FakeChain(), wallet=WALLET, actor="test").values["staff"]
    runtime = Runtime.open(settings, chain=FakeChain())
    try:
        request_id = show_withdrawal(runtime.db, big_withdrawal(runtime))["approval_request_id"]
        t0 = aligned_now()
        for name, expected in (("alice", "pending"), ("bob", "approved")):
            device = pyotp.TOTP(staff[name]["totp_secret"])
            session = login(
                runtime.db,
                runtime.tags,
                runtime.signer,
                runtime.settings,
                username=name,
                password=staff[name]["password"],
                totp=device.at(t0),
                now=t0,
            )
            status = approvals.decide(
                runtime.db,
                runtime.tags,
                runtime.signer,
                runtime.settings,
                request_id=request_id,
                staff=session.principal,
                decision="approve",
                digest=approvals.show_request(runtime.db, runtime.tags, request_id)["digest"],
                totp=device.at(later(t0, 1)),
                comment=None,
                now=later(t0, 1),
            )
            assert status == expected
    finally:
        runtime.close()
