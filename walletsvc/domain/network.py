"""Bitcoin networks. The network is always explicit and scoped to a wallet, never global state.

Every network constant (address versions, bech32 HRPs, BIP32/SLIP-132 version bytes) lives here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


@dataclass(frozen=True)
class NetworkParams:
    bech32_hrp: str
    p2pkh_version: int
    p2sh_version: int
    bip32_coin_type: int  # BIP44 coin type: 0 on mainnet, 1 on every test network
    xpub_version: bytes  # BIP32 serialisation version of the plain x/tpub
    zpub_version: bytes  # SLIP-132 version used for BIP84 account keys (z/vpub)


class Network(StrEnum):
    MAINNET = "mainnet"
    TESTNET = "testnet"
    SIGNET = "signet"
    REGTEST = "regtest"

    @property
    def params(self) -> NetworkParams:
        return _PARAMS[self]

    @property
    def is_test(self) -> bool:
        return self is not Network.MAINNET


_TEST_PARAMS = dict(
    p2pkh_version=0x6F,
    p2sh_version=0xC4,
    bip32_coin_type=1,
    xpub_version=bytes.fromhex("043587cf"),
    zpub_version=bytes.fromhex("045f1cf6"),
)

_PARAMS: dict[Network, NetworkParams] = {
    Network.MAINNET: NetworkParams(
        bech32_hrp="bc",
        p2pkh_version=0x00,
        p2sh_version=0x05,
        bip32_coin_type=0,
        xpub_version=bytes.fromhex("0488b21e"),
        zpub_version=bytes.fromhex("04b24746"),
    ),
    Network.TESTNET: NetworkParams(bech32_hrp="tb", **_TEST_PARAMS),  # type: ignore[arg-type]
    Network.SIGNET: NetworkParams(bech32_hrp="tb", **_TEST_PARAMS),  # type: ignore[arg-type]
    Network.REGTEST: NetworkParams(bech32_hrp="bcrt", **_TEST_PARAMS),  # type: ignore[arg-type]
}

# Every HRP we know, to tell "an address of another network" from "not an address".
SEGWIT_HRPS = frozenset(params.bech32_hrp for params in _PARAMS.values())

# Extended PRIVATE key versions (BIP32 xprv/tprv, SLIP-132 yprv/uprv and zprv/vprv), on every
# network. We never accept one: they are known only to refuse them with a message that says
# what the text is without echoing it.
EXTENDED_PRIVATE_KEY_VERSIONS = frozenset(
    bytes.fromhex(version)
    for version in (
        "0488ade4",  # xprv
        "04358394",  # tprv
        "049d7878",  # yprv
        "044a4e28",  # uprv
        "04b2430c",  # zprv
        "045f18bc",  # vprv
    )
)
