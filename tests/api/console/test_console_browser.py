"""End to end in a real headless browser: log in, approve a payout, see it signed, freeze."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.api.console.browser import (
    Screenshots,
    add_virtual_authenticator,
    chromium,
    log_in,
    log_out,
    needs_chromium,
)
from tests.governance_helpers import Team, big_withdrawal
from tests.helpers import LiveServer, live_server
from tests.signer_helpers import use_relying_party
from walletsvc.api.app import create_app
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.governance.approvals import show_request
from walletsvc.incident.freeze import freeze_overview
from walletsvc.payouts.intake import show_withdrawal

pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture
def server(funded: Runtime) -> Iterator[LiveServer]:
    with live_server(create_app(funded.settings, runtime=funded)) as running:
        # The signer verifies passkeys for the console's origin: this server's.
        use_relying_party(funded.settings, "localhost", f"http://localhost:{running.port}")
        yield running


def test_approvers_release_a_payout_and_freeze_in_the_browser(
    server: LiveServer, funded: Runtime, tmp_path: Path
) -> None:
    team = Team(funded)
    alice, bob = team.add("alice"), team.add("bob")
    payout_id = big_withdrawal(funded)
    request_id = show_withdrawal(funded.db, payout_id)["approval_request_id"]
    shots = Screenshots(tmp_path / "screenshots")

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900})
        for member in (alice, bob):
            log_in(page, server.url, member)
            waiting = page.get_by_role("article", name=f"Request {request_id}")
            expect(waiting).to_contain_text("20,000,000 sat")
            expect(waiting).to_contain_text("approval_tier")
            shots.take(page, f"queue-{member.username}")
            waiting.get_by_label("TOTP code").fill(member.live_code())
            waiting.get_by_role("button", name="Approve", exact=True).click()
            expect(page.get_by_role("status")).to_contain_text(f"You approved request {request_id}")
            shots.take(page, f"approved-{member.username}")
            if member is alice:
                log_out(page)

        funded.tick()  # the worker's pass (the service's background thread is off in tests)
        page.get_by_role("link", name="Payouts", exact=True).click()
        status = page.locator(f"#payout-{payout_id} .status")
        # Signed (and, on the in-memory chain, broadcast in the same pass).
        expect(status).to_have_text(re.compile(r"^(signed|broadcast)$"))
        assert show_withdrawal(funded.db, payout_id)["txid"]
        shots.take(page, "signed")

        page.get_by_label("Reason").fill("browser drill")
        page.get_by_role("button", name="Freeze").click()
        expect(page.locator("#freeze-banner")).to_contain_text("browser drill")
        shots.take(page, "frozen")
        page.get_by_role("link", name="Wallets", exact=True).click()
        expect(page.locator("#freeze-banner")).to_be_visible()  # on every page
        page.set_viewport_size({"width": 390, "height": 844})  # a phone
        shots.take(page, "frozen-phone")
    assert freeze_overview(funded.db)["frozen"] is True


def test_an_approver_registers_a_passkey_and_approves_with_it(
    server: LiveServer, funded: Runtime, tmp_path: Path
) -> None:
    team = Team(funded)
    alice = team.add("alice")
    team.add("bob")
    payout_id = big_withdrawal(funded)
    request_id = show_withdrawal(funded.db, payout_id)["approval_request_id"]
    shots = Screenshots(tmp_path / "screenshots")
    base = f"http://localhost:{server.port}"  # WebAuthn needs a host name, not an IP

    with chromium() as browser:
        page = browser.new_page()
        add_virtual_authenticator(page)
        log_in(page, base, alice)
        page.get_by_role("link", name="Passkeys").click()
        page.get_by_label("Label").fill("virtual authenticator")
        page.get_by_label("TOTP code").fill(alice.live_code())
        page.get_by_role("button", name="Register passkey").click()
        expect(page.get_by_role("status").first).to_contain_text("Passkey registered")
        expect(page.locator("#my-passkeys")).to_contain_text("virtual authenticator")
        shots.take(page, "passkey-registered")

        page.get_by_role("link", name="My queue").click()
        waiting = page.get_by_role("article", name=f"Request {request_id}")
        waiting.get_by_label("Sign with my passkey instead of a TOTP code").check()
        waiting.get_by_role("button", name="Approve", exact=True).click()
        expect(page.get_by_role("status").first).to_contain_text(
            f"You approved request {request_id}"
        )
        shots.take(page, "approved-with-passkey")

    shown = show_request(funded.db, funded.tags, request_id)
    assert shown["approvals_counted"] == 1
    assert [(d["staff"], d["decision"], d["counts"]) for d in shown["decisions"]] == [
        ("alice", "approve", True)
    ]
    with funded.db.read() as uow:
        (decision,) = uow.approval_decisions.with_usernames(request_id)
        assert decision[0].passkey_id is not None and decision[0].totp_step is None
