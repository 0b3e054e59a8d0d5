"""The dev chain beside the service (`make run`): its own RPC port reaches `walletsvc devchain`."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from walletsvc.cli.main import app
from walletsvc.config import Settings
from walletsvc.devchain import commands
from walletsvc.devchain.rpc_server import RPC_INFO_FILE
from walletsvc.devchain.service import serving_dev_chain
from walletsvc.domain.errors import InvalidInput

from .conftest import fund, make_key, spend, txid_of

pytestmark = pytest.mark.kernel


def test_devchain_commands_reach_the_served_chain_then_open_it_directly(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path)
    with serving_dev_chain(settings) as chain:
        assert (settings.chain_dir / RPC_INFO_FILE).exists()
        hashes = commands.mine(settings, 2, None)  # the chain is held: through its RPC port
        assert len(hashes) == 2 and chain.tip().hash == hashes[-1]
        served = commands.status(settings)
        assert served == {"height": 2, "tip": hashes[-1], "mempool": 0, "via": "running service"}
    assert not (settings.chain_dir / RPC_INFO_FILE).exists()
    direct = commands.status(settings)
    assert direct == {"height": 2, "tip": hashes[-1], "mempool": 0, "via": "direct"}


def test_the_dev_chain_is_regtest_and_embedded_only(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput):
        commands.status(Settings(data_dir=tmp_path, chain_backend="rpc"))
    with pytest.raises(ValueError, match="regtest only"):
        Settings(data_dir=tmp_path, network="mainnet")


def test_mine_chosen_transactions_through_the_service_then_directly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`walletsvc devchain mine --tx`: a replaced original (raw hex) confirms, by the served
    chain's generateblock; then a mempool txid, on the chain opened directly."""
    alice, bob, cold = make_key(1), make_key(2), make_key(3)
    settings = Settings(data_dir=tmp_path)
    with serving_dev_chain(settings) as chain:
        first, second = fund(chain, alice, 2)
        original = spend([first], [(bob.script_pubkey, first.amount_sat - 1_000)])
        replacement = spend([first], [(cold.script_pubkey, first.amount_sat - 3_000)])
        later = spend([second], [(bob.script_pubkey, second.amount_sat - 1_000)])
        for raw in (original, replacement, later):
            chain.broadcast(raw)
        assert chain.mempool_txids() == {txid_of(replacement), txid_of(later)}
        (served,) = commands.mine(settings, 1, None, [original.hex()])
        assert chain.tip().hash == served and chain.confirmations(txid_of(original)) == 1
        assert chain.mempool_txids() == {txid_of(later)}

    monkeypatch.setenv("WALLETSVC_DATA_DIR", str(tmp_path))
    runner = CliRunner()
    refused = runner.invoke(app, ["devchain", "mine", "2", "--tx", txid_of(later)])
    assert refused.exit_code == 1 and "exactly one block" in refused.output
    result = runner.invoke(app, ["devchain", "mine", "--tx", txid_of(later)])
    assert result.exit_code == 0, result.output
    assert commands.status(settings)["mempool"] == 0
    unknown = runner.invoke(app, ["devchain", "mine", "--tx", "ab" * 32])
    assert unknown.exit_code == 1 and "not in mempool" in unknown.output
