"""A real headless Chromium (Debian's /usr/bin/chromium) driven by Playwright, for the console.

Never `playwright install`: the system browser is used. Screenshots are test artifacts, kept
under the test's tmp dir (the path is printed).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from tests.governance_helpers import PASSWORD, Member

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless=new",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    # Passkeys need a host name (an IP address is no WebAuthn RP id): the tests browse to
    # http://localhost:<port>, always the IPv4 loopback the test server listens on.
    "--host-resolver-rules=MAP localhost 127.0.0.1",
]
needs_chromium = pytest.mark.skipif(
    not CHROMIUM.exists(), reason="the browser tests need Debian's chromium at /usr/bin/chromium"
)


@contextmanager
def chromium() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser
        finally:
            browser.close()


class Screenshots:
    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        print(f"\nconsole screenshots: {directory}")
        self.count = 0

    def take(self, page: Page, name: str) -> None:
        self.count += 1
        page.screenshot(path=str(self.directory / f"{self.count:02d}-{name}.png"), full_page=True)


def add_virtual_authenticator(page: Page) -> str:
    """Chromium's virtual authenticator (CDP WebAuthn domain): a platform passkey with user
    verification that answers at once. Returns its id."""
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable")
    added = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return str(added["authenticatorId"])


def log_in(page: Page, base_url: str, member: Member) -> None:
    page.goto(f"{base_url}/console/login")
    page.get_by_label("Username").fill(member.username)
    page.get_by_label("Password").fill(PASSWORD)
    page.get_by_label("TOTP code").fill(member.live_code())
    page.get_by_role("button", name="Log in").click()
    expect(page.get_by_text(f"{member.username} ({member.role})")).to_be_visible()


def log_out(page: Page) -> None:
    page.get_by_role("button", name="Log out").click()
    expect(page.get_by_label("Username")).to_be_visible()
