"""The dev API token is shown once, when the dev bootstrap creates it, never at each start."""

from __future__ import annotations

import json

import pytest

from tests.conftest import WALLET
from tests.fakechain import FakeChain
from walletsvc.bootstrap.setup import dev_bootstrap
from walletsvc.cli.main import _print_newcomer_banner
from walletsvc.config import Settings


def test_token_created_once_then_read_from_the_file(settings: Settings) -> None:
    first = dev_bootstrap(settings, FakeChain(), wallet=WALLET, actor="test")
    again = dev_bootstrap(settings, FakeChain(), wallet=WALLET, actor="test")
    assert first.token_created is True
    assert again.token_created is False
    assert again.values["api_token"] == first.values["api_token"]


def test_start_up_banner_never_prints_the_token(
    settings: Settings, capsys: pytest.CaptureFixture[str]
) -> None:
    creds = dev_bootstrap(settings, FakeChain(), wallet=WALLET, actor="test").values
    stored = json.loads((settings.data_dir / "dev-credentials.json").read_text())
    _print_newcomer_banner(creds, settings)
    banner = capsys.readouterr().out
    assert stored["api_token"] not in banner
    assert "dev-credentials.json" in banner and "$TOKEN" in banner
