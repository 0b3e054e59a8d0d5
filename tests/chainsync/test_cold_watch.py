"""The scanner watches cold storage (watch-only): cold coins recorded within the look-ahead,
the next unused cold index moved past a direct payment, and a reorganisation undone."""

from __future__ import annotations

import pytest
from bitcoin.core import CBlockHeader, b2lx
from sqlalchemy import select

from tests.conftest import WALLET
from tests.helpers import embedded
from tests.treasury.cold_wallets import cold_payment, single_key
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models_treasury import ColdDestinationRow, ColdUtxo
from walletsvc.treasury.cold import COLD_LOOKAHEAD, set_initial_cold_destination

BURN = bytes.fromhex("6a")


def _cold_coins(runtime: Runtime) -> list[ColdUtxo]:
    with runtime.db.read() as uow:
        return list(uow.session.scalars(select(ColdUtxo).order_by(ColdUtxo.cold_index)))


def _next_index(runtime: Runtime) -> int:
    with runtime.db.read() as uow:
        return uow.session.scalars(select(ColdDestinationRow)).one().next_index


@pytest.mark.kernel
def test_cold_coins_are_watched_and_a_reorg_undoes_them(runtime: Runtime) -> None:
    chain = embedded(runtime)
    cold = single_key()
    set_initial_cold_destination(
        runtime.db, runtime.tags, wallet=WALLET, text=cold.descriptor, actor="test"
    )
    beyond = COLD_LOOKAHEAD  # index 0 + 20 is the first one not watched
    raw = cold_payment(
        runtime, [(cold.script(0), 1_000), (cold.script(5), 2_000), (cold.script(beyond), 4_000)]
    )
    chain.broadcast(raw)
    runtime.scanner.sync()
    fork = chain.tip()
    (mined,) = chain.mine(1)
    runtime.scanner.sync()

    coins = _cold_coins(runtime)
    assert [(c.cold_index, c.amount_sat, c.block_hash) for c in coins] == [
        (0, 1_000, mined),
        (5, 2_000, mined),
    ]
    assert _next_index(runtime) == 6  # no sweep or refill change pays index 0..5 again
    with runtime.db.read() as uow:
        wallet = uow.wallets.by_name(WALLET)
        assert wallet is not None
        assert uow.cold_utxos.balance_of_wallet(wallet.id) == 3_000

    # A longer branch without the payment: the cold coins are unconfirmed, out of the balance.
    parent = fork.hash
    for i in range(2):
        block = chain.build_block(parent, [], coinbase_script_pubkey=BURN, extra_nonce=7_000 + i)
        chain.submit_block(block)
        parent = str(b2lx(CBlockHeader.deserialize(block[:80]).GetHash()))
    runtime.scanner.sync()
    assert [c.block_height for c in _cold_coins(runtime)] == [None, None]
    with runtime.db.read() as uow:
        assert uow.cold_utxos.balance_of_wallet(wallet.id) == 0
