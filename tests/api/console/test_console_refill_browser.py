"""A refill from cold in a real headless browser, on the embedded chain: an operator proposes
it, downloads the PSBT, the stand-in hardware wallet (embit with the test's cold keys) signs
it, the signed file is uploaded (and, for 2-of-3, a second signature pasted), the service
broadcasts, a block confirms it and the page says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from embit.psbt import PSBT
from playwright.sync_api import Page, expect

from tests.api.console.browser import Screenshots, chromium, log_in, needs_chromium
from tests.conftest import WALLET
from tests.governance_helpers import Team
from tests.helpers import LiveServer, dev_chain, live_server
from tests.treasury.cold_wallets import COLD
from tests.treasury.test_refills import with_cold_coins
from walletsvc.api.app import create_app
from walletsvc.bootstrap.runtime import Runtime

pytestmark = [pytest.mark.browser, pytest.mark.kernel, needs_chromium]


@pytest.fixture
def server(runtime: Runtime) -> Iterator[LiveServer]:
    with live_server(create_app(runtime.settings, runtime=runtime)) as running:
        yield running


def _download(page: Page, directory: Path) -> PSBT:
    with page.expect_download() as started:
        page.get_by_role("button", name="Download PSBT").click()
    saved = directory / started.value.suggested_filename
    started.value.save_as(saved)
    return PSBT.from_string(saved.read_text())


@pytest.mark.parametrize("kind", sorted(COLD))
def test_an_operator_refills_the_hot_wallet_with_a_hardware_signed_psbt(
    server: LiveServer, runtime: Runtime, tmp_path: Path, kind: str
) -> None:
    cold = COLD[kind]()
    with_cold_coins(runtime, cold)
    olga = Team(runtime).add("olga", role="operator", groups=())
    shots = Screenshots(tmp_path / "screenshots")
    files = tmp_path / "psbts"
    files.mkdir()

    with chromium() as browser:
        page = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        log_in(page, server.url, olga)
        page.get_by_role("link", name="Refills", exact=True).click()
        wallet = page.get_by_role("article", name=f"Hot balance of {WALLET}")
        expect(wallet).to_contain_text("Below its floor")
        expect(wallet).to_contain_text("200,000,000 sat")  # the target, and what a refill brings
        shots.take(page, f"{kind}-below-floor")
        wallet.get_by_role("button", name="Propose refill").click()
        expect(page.get_by_role("status").first).to_contain_text("Refill proposed")
        expect(page.locator("#refill-signatures")).to_contain_text(f"0 of {cold.needed}")
        shots.take(page, f"{kind}-proposed")

        for n, signer in enumerate(cold.signers[: cold.needed], start=1):
            psbt = _download(page, files)
            assert psbt.sign_with(signer) == len(psbt.inputs)  # the "device" signs
            if n == 1:
                signed = files / f"signed-{n}.psbt"
                signed.write_bytes(psbt.serialize())  # binary, as a Coldcard writes it
                page.get_by_label("Signed PSBT file").set_input_files(str(signed))
            else:
                page.get_by_label("Or paste the signed PSBT (base64)").fill(psbt.to_string())
            page.get_by_role("button", name="Upload", exact=True).click()
            expect(page.locator("#refill-signatures")).to_contain_text(f"{n} of {cold.needed}")
            shots.take(page, f"{kind}-signed-{n}")
        expect(page.get_by_role("status").first).to_contain_text("complete and broadcast")
        expect(page.locator("#refill-status")).to_have_text("broadcast")
        txid = runtime.refills.recent(1)[0]["txid"]
        assert txid in dev_chain(runtime).mempool_txids()

        dev_chain(runtime).mine(1)
        runtime.scanner.sync()
        page.reload()
        expect(page.locator("#refill-status")).to_have_text("confirmed")
        expect(page.get_by_role("button", name="Upload", exact=True)).to_have_count(0)
        shots.take(page, f"{kind}-confirmed")
        page.get_by_role("link", name="Refills", exact=True).click()
        expect(page.get_by_role("article", name=f"Hot balance of {WALLET}")).to_contain_text(
            "At or above its floor"
        )
