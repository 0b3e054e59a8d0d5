"""The dev chain beside the service (`make run`): its own RPC port reaches `walletsvc devchain`."""

from __future__ import annotations

from pathlib import Path

import pytest

from walletsvc.config import Settings
from walletsvc.devchain import commands
from walletsvc.devchain.rpc_server import RPC_INFO_FILE
from walletsvc.devchain.service import serving_dev_chain
from walletsvc.domain.errors import InvalidInput

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
