"""BIP32/BIP84 derivation against the BIP vectors, bip-utils and embit (independent)."""

from __future__ import annotations

import os

import pytest
from bip_utils import Bip32Slip10Secp256k1, Bip44Changes, Bip84, Bip84Coins
from embit import bip32 as embit_bip32
from embit import script as embit_script
from embit.networks import NETWORKS
from hypothesis import given, settings
from hypothesis import strategies as st

from walletsvc.domain.address import decode_address
from walletsvc.domain.hashes import hash160
from walletsvc.domain.network import Network
from walletsvc.domain.transaction import KeyPath
from walletsvc.keys.errors import InvalidXpub
from walletsvc.keys.hd import (
    HARDENED,
    AccountKeys,
    AccountXpub,
    _ckd_priv,
    _ckd_pub,
    _master,
    _pub_of,
    _PubNode,
    derive_private_key,
)

SEED = bytes.fromhex("a1" * 32 + "5c" * 32)
BIP84_COINS = {
    Network.MAINNET: Bip84Coins.BITCOIN,
    Network.REGTEST: Bip84Coins.BITCOIN_REGTEST,
    Network.TESTNET: Bip84Coins.BITCOIN_TESTNET,
}
EMBIT_NETS = {
    Network.MAINNET: "main",
    Network.REGTEST: "regtest",
    Network.TESTNET: "test",
    Network.SIGNET: "signet",
}


def test_hash160_uses_a_working_ripemd160() -> None:
    # RIPEMD-160("") and hash160 of the generator point, both well-known constants.
    import hashlib

    assert hashlib.new("ripemd160", b"").hexdigest() == "9c1185a5c5e9fc54612808977ee8f548b2258d31"
    g = bytes.fromhex("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
    assert hash160(g).hex() == "751e76e8199196d454941c45d1b3a323f1433bd6"


# --- BIP84 "Test vectors" (mnemonic "abandon ... about", mainnet) -------------------------
BIP84_ZPUB = (
    "zpub6rFR7y4Q2AijBEqTUquhVz398htDFrtymD9xYYfG1m4wAcvPhXNfE3EfH1r1ADqtfSdVCToUG868RvUUkg"
    "DKf31mGDtKsAYz2oz2AGutZYs"
)


def test_bip84_reference_vector() -> None:
    xpub = AccountXpub.parse(BIP84_ZPUB, Network.MAINNET)
    assert xpub.slip132 == BIP84_ZPUB
    assert xpub.pubkey(0, 0).hex() == (
        "0330d54fd0dd420a6e5f8d3624f5f3482cae350f79d5f0753bf5beef9c2d91af3c"
    )
    assert xpub.address(0, 0) == "bc1qcr8te4kr609gcawutmrza0j4xv80jy8z306fyu"
    assert xpub.address(0, 1) == "bc1qnjg0jd8228aq7egyzacy8cys3knf9xvrerkf9g"
    assert xpub.address(1, 0) == "bc1q8c6fshw2dlwun7ekn9qwf37cu2rn755upcp6el"
    assert (
        xpub.script_pubkey(0, 0)
        == decode_address(xpub.address(0, 0), Network.MAINNET).script_pubkey
    )


# --- BIP32 test vector 1 (seed 000102...0f) ------------------------------------------------
BIP32_V1_SEED = bytes.fromhex("000102030405060708090a0b0c0d0e0f")
BIP32_V1_M_0H_1_2H = (
    "xpub6D4BDPcP2GT577Vvch3R8wDkScZWzQzMMUm3PWbmWvVJrZwQY4VUNgqFJPMM3No2dFDFGTsxxpG5uJh7n7epu4"
    "trkrX7x7DogT5Uv6fcLW5"
)
BIP32_V1_M_0H_1_2H_2 = (
    "xpub6FHa3pjLCk84BayeJxFW2SP4XRrFd1JYnxeLeU8EqN3vDfZmbqBqaGJAyiLjTAwm6ZLRQUMv1ZACTj37sR62cf"
    "N7fe5JnJ7dh8zL4fiyLHV"
)
BIP32_V1_M_0H_1_2H_2_1000000000 = (
    "xpub6H1LXWLaKsWFhvm6RVpEL9P4KfRZSW7abD2ttkWP3SSQvnyA8FSVqNTEcYFgJS2UaFcxupHiYkro49S8yGasTv"
    "XEYBVPamhGW6cFJodrTHy"
)


def _payload(xpub: str) -> tuple[bytes, bytes]:
    from bip_utils import Base58Decoder

    raw = bytes(Base58Decoder.CheckDecode(xpub))
    return raw[45:78], raw[13:45]  # key, chain code


def test_bip32_vector_1_public_and_private_derivation() -> None:
    # Private: m/0'/1/2'/2/1000000000 from the seed.
    k, c = _master(BIP32_V1_SEED)
    for index in (0 | HARDENED, 1, 2 | HARDENED, 2, 1_000_000_000):
        k, c = _ckd_priv(k, c, index, None)
    assert (_pub_of(k), c) == _payload(BIP32_V1_M_0H_1_2H_2_1000000000)
    # Public: the same two non-hardened steps from the xpub of m/0'/1/2'.
    key, code = _payload(BIP32_V1_M_0H_1_2H)
    from coincurve import PublicKey

    node = _PubNode(PublicKey(key), key, code)
    child, child_code = _ckd_pub(node, 2)
    assert (child.format(), child_code) == _payload(BIP32_V1_M_0H_1_2H_2)
    node = _PubNode(child, child.format(), child_code)
    child, child_code = _ckd_pub(node, 1_000_000_000)
    assert (child.format(), child_code) == _payload(BIP32_V1_M_0H_1_2H_2_1000000000)
    # And the whole account xpub parses (depth 3, hardened) as a mainnet account.
    assert AccountXpub.parse(BIP32_V1_M_0H_1_2H, Network.MAINNET).xpub == BIP32_V1_M_0H_1_2H


# --- agreement with bip-utils and embit over many indexes -----------------------------------
@pytest.mark.parametrize("network", [Network.MAINNET, Network.REGTEST, Network.TESTNET])
def test_account_xpub_matches_bip_utils_and_embit(network: Network) -> None:
    keys = AccountKeys(SEED, network)
    ours = keys.account_xpub()
    coin = network.params.bip32_coin_type
    bu = Bip84.FromSeed(SEED, BIP84_COINS[network]).Purpose().Coin().Account(0)
    assert ours.slip132 == bu.PublicKey().ToExtended()
    root = embit_bip32.HDKey.from_seed(SEED)
    em = root.derive(f"m/84h/{coin}h/0h").to_public()
    em_net = NETWORKS[EMBIT_NETS[network]]
    assert ours.xpub == em.to_base58(version=em_net["xpub"])
    assert ours.slip132 == em.to_base58(version=em_net["zpub"])
    assert ours.xpub.startswith("xpub" if network is Network.MAINNET else "tpub")
    assert keys.master_fingerprint == root.my_fingerprint


@pytest.mark.parametrize("network", [Network.MAINNET, Network.REGTEST, Network.SIGNET])
def test_addresses_match_embit_for_many_indexes(network: Network) -> None:
    keys = AccountKeys(SEED, network)
    xpub = AccountXpub.parse(keys.account_xpub().xpub, network)
    em_net = NETWORKS[EMBIT_NETS[network]]
    account = (
        embit_bip32.HDKey.from_seed(SEED)
        .derive(f"m/84h/{network.params.bip32_coin_type}h/0h")
        .to_public()
    )
    for chain in (0, 1):
        chain_node = account.derive([chain])
        for index in [*range(120), 2**31 - 1, 1_000_000]:
            child = chain_node.derive([index])
            script = embit_script.p2wpkh(child.key)
            assert xpub.pubkey(chain, index) == child.key.sec()
            assert xpub.script_pubkey(chain, index) == script.data
            assert xpub.address(chain, index) == script.address(em_net)


def test_addresses_match_bip_utils_for_many_indexes() -> None:
    bu = Bip84.FromSeed(SEED, Bip84Coins.BITCOIN_REGTEST).Purpose().Coin().Account(0)
    xpub = AccountXpub.parse(bu.PublicKey().ToExtended(), Network.REGTEST)
    for chain, change in ((0, Bip44Changes.CHAIN_EXT), (1, Bip44Changes.CHAIN_INT)):
        node = bu.Change(change)
        for index in range(0, 300, 3):
            assert xpub.address(chain, index) == node.AddressIndex(index).PublicKey().ToAddress()


@settings(max_examples=60, deadline=None)
@given(
    seed=st.binary(min_size=16, max_size=64),
    chain=st.sampled_from([0, 1]),
    index=st.integers(min_value=0, max_value=2**31 - 1),
)
def test_private_and_public_derivation_agree_with_bip_utils(
    seed: bytes, chain: int, index: int
) -> None:
    keys = AccountKeys(seed, Network.REGTEST)
    xpub = keys.account_xpub()
    derived = keys.key(chain, index)
    assert derived.public_key == xpub.pubkey(chain, index)
    assert derived.private_key.public_key.format() == derived.public_key
    bu = Bip32Slip10Secp256k1.FromSeed(seed).DerivePath(f"m/84'/1'/0'/{chain}/{index}")
    assert derived.private_key.secret == bytes(bu.PrivateKey().Raw().ToBytes())
    one_off = derive_private_key(seed, Network.REGTEST, KeyPath(1, chain, index))
    assert one_off.public_key == derived.public_key


# --- parsing and refusals -------------------------------------------------------------------
def test_parse_accepts_both_serialisations_of_the_same_key() -> None:
    xpub = AccountKeys(SEED, Network.REGTEST).account_xpub()
    a = AccountXpub.parse(xpub.xpub, Network.REGTEST)
    b = AccountXpub.parse(xpub.slip132, Network.REGTEST)
    assert a == b and hash(a) == hash(b)
    assert a.address(0, 7) == b.address(0, 7)
    assert AccountXpub.parse(xpub.xpub, Network.TESTNET).address(0, 0).startswith("tb1q")
    assert repr(a).startswith("AccountXpub('tpub")


@pytest.mark.parametrize(
    ("have", "want"),
    [
        (Network.MAINNET, Network.REGTEST),
        (Network.REGTEST, Network.MAINNET),
        (Network.TESTNET, Network.MAINNET),
    ],
)
def test_parse_refuses_the_other_network(have: Network, want: Network) -> None:
    xpub = AccountKeys(SEED, have).account_xpub()
    for text in (xpub.xpub, xpub.slip132):
        with pytest.raises(InvalidXpub, match=f"this wallet is on {want.value}"):
            AccountXpub.parse(text, want)


def test_parse_refuses_private_keys_without_echoing_them() -> None:
    root = embit_bip32.HDKey.from_seed(SEED)
    xprv = root.derive("m/84h/0h/0h").to_base58(version=NETWORKS["main"]["xprv"])
    with pytest.raises(InvalidXpub, match="PRIVATE") as info:
        AccountXpub.parse(xprv, Network.MAINNET)
    assert xprv not in str(info.value)
    assert info.value.__cause__ is None


def test_parse_refuses_non_account_depths() -> None:
    root = embit_bip32.HDKey.from_seed(SEED)
    for path in ("m", "m/84h/0h", "m/84h/0h/0h/0"):
        text = root.derive(path).to_public().to_base58(version=NETWORKS["main"]["xpub"])
        with pytest.raises(InvalidXpub, match="account key"):
            AccountXpub.parse(text, Network.MAINNET)


@pytest.mark.parametrize("text", ["", "xpub", "x" * 111, BIP84_ZPUB[:-1] + "t", 42])
def test_parse_refuses_garbage(text: object) -> None:
    with pytest.raises(InvalidXpub):
        AccountXpub.parse(text, Network.MAINNET)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("chain", "index"), [(2, 0), (-1, 0), (0, -1), (0, 2**31), (True, 0), (0, 1.0)]
)
def test_only_bip84_chains_and_unhardened_indexes(chain: int, index: int) -> None:
    xpub = AccountKeys(SEED, Network.REGTEST).account_xpub()
    with pytest.raises(ValueError):
        xpub.address(chain, index)
    with pytest.raises(ValueError):
        AccountKeys(SEED, Network.REGTEST).key(chain, index)


def test_account_keys_are_unusable_after_wipe() -> None:
    keys = AccountKeys(os.urandom(64), Network.REGTEST)
    keys.key(0, 0)
    keys.wipe()
    with pytest.raises(RuntimeError):
        keys.key(0, 1)
