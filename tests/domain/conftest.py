"""Shared fixtures for the domain tests: coins, scripts and key paths made to order."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from walletsvc.domain.transaction import CHANGE_CHAIN, RECEIVE_CHAIN, Coin, KeyPath

MakeCoin = Callable[..., Coin]


def p2wpkh_script(tag: int) -> bytes:
    return b"\x00\x14" + bytes([tag % 256]) * 20


@pytest.fixture
def change_script() -> bytes:
    return p2wpkh_script(0xCC)


@pytest.fixture
def change_path() -> KeyPath:
    return KeyPath(epoch=0, chain=CHANGE_CHAIN, index=7)


@pytest.fixture
def make_coin() -> MakeCoin:
    """Coins with unique outpoints unless ``n`` is repeated; 6 confirmations by default."""

    def make(
        amount_sat: int,
        n: int,
        *,
        confirmations: int = 6,
        is_coinbase: bool = False,
        chain: int = RECEIVE_CHAIN,
        script: bytes | None = None,
        vout: int = 0,
    ) -> Coin:
        return Coin(
            txid=f"{n:064x}",
            vout=vout,
            amount_sat=amount_sat,
            script_pubkey=script if script is not None else p2wpkh_script(n),
            key_path=KeyPath(epoch=0, chain=chain, index=n),
            confirmations=confirmations,
            is_coinbase=is_coinbase,
        )

    return make
