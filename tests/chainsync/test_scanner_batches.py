"""The scanner records a block with batched look-ups by the block's own scripts (no map of
every watched address) and extends the look-ahead as it goes: an output paying an address
derived only because of an earlier output of the same block is still recorded. (Its speed,
flat in the number of watched addresses, is a figure in bench/bench_intake.py.)"""

from __future__ import annotations

import pytest
from bitcoin.core import CBlockHeader, b2lx
from sqlalchemy import func, select

from tests.chain.conftest import Prevout, make_key, spend
from tests.conftest import WALLET, fund_wallet
from tests.helpers import audit_events, embedded
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.models import Address, Utxo
from walletsvc.domain.network import Network
from walletsvc.keys.hd import AccountXpub
from walletsvc.wallets.service import LOOKAHEAD, get_wallet

pytestmark = pytest.mark.kernel

RECEIVE = 0


def _receive_script(runtime: Runtime, index: int) -> bytes:
    with runtime.db.read() as uow:
        wallet = get_wallet(uow, WALLET)
        epoch = uow.key_epochs.of_wallet(wallet.id, wallet.current_epoch)
        xpub = AccountXpub.parse(epoch.account_xpub, Network(wallet.network))
    return xpub.script_pubkey(RECEIVE, index)


def _highest_receive_index(runtime: Runtime) -> int:
    with runtime.db.read() as uow:
        return int(
            uow.session.scalar(select(func.max(Address.index)).where(Address.chain == RECEIVE))
        )


def test_an_output_to_an_address_derived_within_the_same_block_is_recorded(
    runtime: Runtime,
) -> None:
    chain = embedded(runtime)
    alice = make_key(11)
    (cb_hash,) = chain.mine(1, alice.script_pubkey)
    fund_wallet(runtime)  # also matures alice's coinbase
    height = chain.block_height(cb_hash)
    ((txid, vout), coin) = next(
        (op, u)
        for op, u in chain.utxos_for_script(alice.script_pubkey).items()
        if u.height == height
    )
    first_window_end = _highest_receive_index(runtime)
    # The last address of today's look-ahead window, then one beyond it that exists only
    # once the first is seen paid, then one that is not ours at all.
    near = first_window_end
    beyond = first_window_end + LOOKAHEAD // 2
    outputs = [
        (_receive_script(runtime, near), 100_000),
        (_receive_script(runtime, beyond), 200_000),
    ]
    outputs.append((bytes.fromhex("0014" + "ab" * 20), 300_000))
    raw_tx = spend(
        [Prevout(txid, vout, coin.amount_sat, alice)],
        outputs,
    )
    parent = chain.block_hash(chain.tip().height)
    assert parent is not None
    block = chain.build_block(parent, [raw_tx], coinbase_script_pubkey=b"\x6a", extra_nonce=7)
    chain.submit_block(block)
    assert chain.block_hash(chain.tip().height) == str(
        b2lx(CBlockHeader.deserialize(block[:80]).GetHash())
    )

    report = runtime.scanner.sync()
    assert report.blocks_scanned == 1
    with runtime.db.read() as uow:
        recorded = sorted(
            (u.amount_sat, u.block_height)
            for u in uow.session.scalars(select(Utxo).where(Utxo.amount_sat < 1_000_000))
        )
    assert recorded == [(100_000, chain.tip().height), (200_000, chain.tip().height)]
    # The window now reaches LOOKAHEAD past the highest address paid.
    assert _highest_receive_index(runtime) == beyond + LOOKAHEAD
    seen = [e.data["amount_sat"] for e in audit_events(runtime.db, "deposit.seen")]
    assert seen[-2:] == [100_000, 200_000]
