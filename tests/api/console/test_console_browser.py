"""End to end in a real headless browser: log in, approve a payout, see it signed, freeze."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import expect

from tests.api.console.browser import Screenshots, chromium, log_in, log_out, needs_chromium
from tests.governance_helpers import Team, big_withdrawal
from tests.helpers import LiveServer, live_server
from walletsvc.api.app import create_app
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.incident.freeze import freeze_overview
from walletsvc.payouts.intake import show_withdrawal

pytestmark = [pytest.mark.browser, needs_chromium]


@pytest.fixture
def server(funded: Runtime) -> Iterator[LiveServer]:
    with live_server(create_app(funded.settings, runtime=funded)) as running:
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
            waiting.get_by_role("button", name="Approve").click()
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
