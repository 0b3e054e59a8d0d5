"""The one extended public key parser, through both of its callers.

``AccountXpub.parse`` (hot wallets, account xpubs) and the cold descriptors both go through
``parse_xpub``. Before they shared it each had its own decoder; these tests pin what each
accepted then (the BIP32 form everywhere, SLIP-132 zpub/vpub only for account keys) and that
both refuse every private key version without repeating it.
"""

from __future__ import annotations

import hashlib

import pytest
from embit import bip32

from walletsvc.domain.network import EXTENDED_PRIVATE_KEY_VERSIONS, Network
from walletsvc.keys.descriptor import InvalidDescriptor, parse_cold_destination
from walletsvc.keys.errors import InvalidXpub
from walletsvc.keys.hd import AccountXpub, parse_xpub

SEED = hashlib.sha256(b"one xpub parser").digest()
YPUB = bytes.fromhex("049d7cb2")  # SLIP-132 BIP49 (P2SH-P2WPKH): never one of ours


def _account() -> bip32.HDKey:
    return bip32.HDKey.from_seed(SEED).derive("m/84h/1h/0h")


def _encode(version: bytes, *, private: bool = False) -> str:
    key = _account() if private else _account().to_public()
    return str(key.to_base58(version=version))


@pytest.mark.parametrize("network", list(Network))
@pytest.mark.parametrize("slip132", [False, True])
def test_account_path_accepts_both_forms_on_every_network(network: Network, slip132: bool) -> None:
    params = network.params
    text = _encode(params.zpub_version if slip132 else params.xpub_version)
    account = AccountXpub.parse(text, network)
    assert account.to_string(slip132=slip132) == text
    assert account.xpub == _encode(params.xpub_version)


@pytest.mark.parametrize("network", list(Network))
def test_descriptor_path_accepts_the_bip32_form_on_every_network(network: Network) -> None:
    tpub = _encode(network.params.xpub_version)
    cold = parse_cold_destination(f"wpkh({tpub}/0/*)", network)
    assert tpub in cold.descriptor
    # A bare account key (no parentheses) goes through AccountXpub and means the same.
    assert parse_cold_destination(tpub, network).descriptor == cold.descriptor


@pytest.mark.parametrize("network", list(Network))
def test_descriptor_path_refuses_the_slip132_form(network: Network) -> None:
    vpub = _encode(network.params.zpub_version)
    with pytest.raises(InvalidDescriptor, match="SLIP-132"):
        parse_cold_destination(f"wpkh({vpub}/0/*)", network)
    # ...while the bare account key in that form is fine (it is how wallets show BIP84 keys).
    assert parse_cold_destination(vpub, network).kind.value == "wpkh"


@pytest.mark.parametrize("version", sorted(EXTENDED_PRIVATE_KEY_VERSIONS))
@pytest.mark.parametrize("network", [Network.MAINNET, Network.REGTEST])
def test_both_paths_refuse_every_private_version_without_echoing_it(
    version: bytes, network: Network
) -> None:
    xprv = _encode(version, private=True)
    with pytest.raises(InvalidXpub, match="PRIVATE") as info:
        AccountXpub.parse(xprv, network)
    assert xprv not in str(info.value) and info.value.__cause__ is None
    for text in (xprv, f"wpkh({xprv}/0/*)", f"wsh(sortedmulti(1,{xprv}/0/*))"):
        with pytest.raises(InvalidDescriptor, match="PRIVATE") as cold_info:
            parse_cold_destination(text, network)
        assert xprv not in cold_info.value.message and cold_info.value.__cause__ is None


def test_both_paths_refuse_other_versions() -> None:
    ypub = _encode(YPUB)
    with pytest.raises(InvalidXpub, match="unsupported extended key version 049d7cb2"):
        AccountXpub.parse(ypub, Network.MAINNET)
    with pytest.raises(InvalidDescriptor, match="unsupported"):
        parse_cold_destination(f"wpkh({ypub}/0/*)", Network.MAINNET)


@pytest.mark.parametrize(
    ("have", "want"), [(Network.MAINNET, Network.SIGNET), (Network.TESTNET, Network.MAINNET)]
)
def test_both_paths_refuse_the_other_network(have: Network, want: Network) -> None:
    for version in (have.params.xpub_version, have.params.zpub_version):
        text = _encode(version)
        with pytest.raises(InvalidXpub, match=f"this wallet is on {want.value}"):
            AccountXpub.parse(text, want)
        with pytest.raises(InvalidDescriptor, match=f"this wallet is on {want.value}"):
            parse_cold_destination(f"wpkh({text}/0/*)", want)


def test_parser_refuses_an_invalid_point() -> None:
    # A valid checksum around a public key that is not on the curve (x = 5 has no y).
    from bip_utils import Base58Encoder

    params = Network.MAINNET.params
    payload = params.xpub_version + bytes([3]) + bytes(4) + bytes.fromhex("80000000")
    text = Base58Encoder.CheckEncode(payload + bytes(32) + b"\x02" + (5).to_bytes(32, "big"))
    with pytest.raises(InvalidXpub, match="invalid point"):
        parse_xpub(text, Network.MAINNET, slip132=True)
    with pytest.raises(InvalidDescriptor, match="invalid point"):
        parse_cold_destination(f"wpkh({text}/0/*)", Network.MAINNET)
