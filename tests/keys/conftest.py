"""Fixtures for the key layer: a fixed KEK, wallets restored from known mnemonics, the kernel."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from walletsvc.chain.kernel import KernelScriptVerifier
from walletsvc.domain.network import Network
from walletsvc.keys.hd import AccountXpub
from walletsvc.keys.kek import Kek
from walletsvc.keys.keystore import EncryptedSeed, import_mnemonic
from walletsvc.keys.signer import HotSigner

WALLET = "pool-hot"
KEK_BYTES = bytes(range(32))
# Two well-known BIP39 mnemonics (entropy 0x00.. and 0x7f..), one per key epoch.
MNEMONIC_EPOCH_1 = " ".join(["abandon"] * 23 + ["art"])
MNEMONIC_EPOCH_2 = " ".join(
    ["legal", "winner", "thank", "year", "wave", "sausage", "worth", "useful"] * 2
    + ["legal", "winner", "thank", "year", "wave", "sausage", "worth", "title"]
)


@dataclass(frozen=True)
class KeysWallet:
    kek: Kek
    network: Network
    seeds: dict[int, EncryptedSeed]
    xpubs: dict[int, AccountXpub]
    mnemonics: dict[int, str]


def make_wallet(network: Network, kek: Kek | None = None) -> KeysWallet:
    kek = kek or Kek(KEK_BYTES)
    seeds: dict[int, EncryptedSeed] = {}
    xpubs: dict[int, AccountXpub] = {}
    mnemonics = {1: MNEMONIC_EPOCH_1, 2: MNEMONIC_EPOCH_2}
    for epoch, words in mnemonics.items():
        new = import_mnemonic(kek.seed_vault(), words, wallet=WALLET, epoch=epoch, network=network)
        seeds[epoch] = new.encrypted
        xpubs[epoch] = AccountXpub.parse(new.account_xpub, network)
    return KeysWallet(kek, network, seeds, xpubs, mnemonics)


@pytest.fixture(scope="session")
def kek() -> Kek:
    return Kek(KEK_BYTES)


@pytest.fixture(scope="session")
def wallet() -> KeysWallet:
    return make_wallet(Network.REGTEST)


@pytest.fixture(scope="session")
def kernel() -> KernelScriptVerifier:
    return KernelScriptVerifier()


@pytest.fixture(scope="session")
def signer(wallet: KeysWallet, kernel: KernelScriptVerifier) -> HotSigner:
    return HotSigner(wallet.kek.seed_vault(), kernel)
