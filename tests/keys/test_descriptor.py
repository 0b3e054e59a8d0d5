"""Cold destinations: published vectors (Bitcoin Core), and agreement with embit."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
from embit import bip32, script
from embit.descriptor import Descriptor
from embit.networks import NETWORKS

from walletsvc.domain.network import Network
from walletsvc.keys.descriptor import (
    ColdKind,
    InvalidDescriptor,
    descriptor_checksum,
    parse_cold_destination,
)

VECTORS = json.loads((Path(__file__).parents[1] / "data" / "descriptor_vectors.json").read_text())
REGTEST = NETWORKS["regtest"]


def _account(seed_tag: str, path: str = "m/48h/1h/0h/2h") -> tuple[str, str, str]:
    """(master fingerprint, tpub, tprv) of a test key, made by embit."""
    root = bip32.HDKey.from_seed(
        hashlib.sha256(seed_tag.encode()).digest(), version=REGTEST["xprv"]
    )
    account = root.derive(path)
    return root.my_fingerprint.hex(), account.to_public().to_base58(REGTEST["xpub"]), path


def _multisig_text(m: int, tags: list[str]) -> str:
    keys = []
    for tag in tags:
        fingerprint, tpub, path = _account(tag)
        keys.append(f"[{fingerprint}/{path[2:].replace('h', chr(39))}]{tpub}/0/*")
    return f"wsh(sortedmulti({m},{','.join(keys)}))"


def test_core_sortedmulti_vector_in_wsh() -> None:
    vector = VECTORS["sortedmulti"]
    body = f"wsh(sortedmulti({vector['threshold']},{','.join(vector['keys'])}))"
    cold = parse_cold_destination(body, Network.MAINNET)
    assert cold.kind is ColdKind.MULTISIG
    for index, expected in enumerate(vector["scripts"]):
        witness_script = bytes.fromhex(expected)
        assert cold.witness_script(index) == witness_script
        assert cold.script_pubkey(index) == b"\x00\x20" + hashlib.sha256(witness_script).digest()


def test_key_order_does_not_change_addresses_bip67() -> None:
    vector = VECTORS["sortedmulti"]
    forward = f"wsh(sortedmulti(2,{','.join(vector['keys'])}))"
    backward = f"wsh(sortedmulti(2,{','.join(reversed(vector['keys']))}))"
    a = parse_cold_destination(forward, Network.MAINNET)
    b = parse_cold_destination(backward, Network.MAINNET)
    assert [a.address(i) for i in range(3)] == [b.address(i) for i in range(3)]


@pytest.mark.parametrize(("body", "checksum"), VECTORS["checksums"]["valid"])
def test_core_checksum_vectors(body: str, checksum: str) -> None:
    assert descriptor_checksum(body) == checksum


def test_checksum_is_verified_when_given_and_computed_when_absent() -> None:
    text = _multisig_text(2, ["alice", "bob", "carol"])
    cold = parse_cold_destination(text, Network.REGTEST)
    assert cold.descriptor.endswith("#" + descriptor_checksum(cold.descriptor.split("#")[0]))
    # The normalised form (with its checksum) parses back to itself.
    again = parse_cold_destination(cold.descriptor, Network.REGTEST)
    assert again.descriptor == cold.descriptor and again.fingerprint == cold.fingerprint
    body, checksum = cold.descriptor.split("#")
    wrong = checksum[:-1] + ("q" if checksum[-1] != "q" else "p")
    with pytest.raises(InvalidDescriptor, match="does not match"):
        parse_cold_destination(f"{body}#{wrong}", Network.REGTEST)
    with pytest.raises(InvalidDescriptor, match="8-character"):
        parse_cold_destination(f"{body}#{checksum[:7]}", Network.REGTEST)


def test_multisig_addresses_agree_with_embit() -> None:
    text = _multisig_text(2, ["alice", "bob", "carol"])
    ours = parse_cold_destination(text, Network.REGTEST)
    theirs = Descriptor.from_string(text)
    for index in (0, 1, 2, 17, 1000):
        assert ours.address(index) == theirs.derive(index).address(REGTEST)
    assert ours.threshold == 2 and ours.key_count == 3


@pytest.mark.parametrize("slip132", [False, True])
def test_account_xpub_is_bip84_receive_chain(slip132: bool) -> None:
    root = bip32.HDKey.from_seed(hashlib.sha256(b"cold single").digest(), version=REGTEST["xprv"])
    account = root.derive("m/84h/1h/0h").to_public()
    text = account.to_base58(REGTEST["zpub"] if slip132 else REGTEST["xpub"])
    cold = parse_cold_destination(text, Network.REGTEST)
    assert cold.kind is ColdKind.SINGLE_SIG
    for index in range(5):
        expected = script.p2wpkh(account.derive([0, index]).key).address(REGTEST)
        assert cold.address(index) == expected
    # tpub and vpub of the same key are the same destination, with the same fingerprint.
    other = account.to_base58(REGTEST["xpub"] if slip132 else REGTEST["zpub"])
    assert parse_cold_destination(other, Network.REGTEST).fingerprint == cold.fingerprint


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda t: t.replace("/0/*", "/0h/*", 1), "non-hardened"),
        (lambda t: t.replace("/0/*", "/0", 1), "wildcard"),
        (lambda t: t.replace("sortedmulti(2,", "sortedmulti(4,"), "threshold"),
        (lambda t: t.replace("sortedmulti(2,", "sortedmulti(0,"), "threshold"),
        (lambda t: t.replace("wsh(sortedmulti", "sh(sortedmulti"), "unsupported"),
        (lambda t: t.replace("[", "[zz", 1), "fingerprint"),
    ],
)
def test_bad_multisig_descriptors_are_refused(mutate: object, message: str) -> None:
    text = mutate(_multisig_text(2, ["alice", "bob", "carol"]))  # type: ignore[operator]
    with pytest.raises(InvalidDescriptor, match=message):
        parse_cold_destination(text, Network.REGTEST)


def test_refusals_never_echo_keys() -> None:
    root = bip32.HDKey.from_seed(hashlib.sha256(b"secret").digest(), version=REGTEST["xprv"])
    xprv = root.derive("m/48h/1h/0h/2h").to_base58(REGTEST["xprv"])
    _, tpub, _ = _account("alice")
    for text in (f"wsh(sortedmulti(1,{xprv}/0/*,{tpub}/0/*))", xprv):
        with pytest.raises(InvalidDescriptor) as info:
            parse_cold_destination(text, Network.REGTEST)
        assert xprv not in info.value.message and "PRIVATE" in info.value.message
    # A mainnet key on regtest, and the same key twice.
    with pytest.raises(InvalidDescriptor, match="regtest"):
        parse_cold_destination(
            f"wsh(sortedmulti(1,{VECTORS['sortedmulti']['keys'][0]}))", Network.REGTEST
        )
    with pytest.raises(InvalidDescriptor, match="twice"):
        parse_cold_destination(f"wsh(sortedmulti(1,{tpub}/0/*,{tpub}/0/*))", Network.REGTEST)


def test_fingerprint_is_a_short_hash_of_the_normalised_form() -> None:
    text = _multisig_text(2, ["alice", "bob", "carol"])
    cold = parse_cold_destination(text.replace("'", "h"), Network.REGTEST)
    assert cold.fingerprint == hashlib.sha256(cold.descriptor.encode()).hexdigest()[:16]
    assert cold.fingerprint == parse_cold_destination(text, Network.REGTEST).fingerprint


@pytest.mark.parametrize("index", [-1, 2**31, True, 1.0])
def test_cold_addresses_take_only_unhardened_indexes(index: object) -> None:
    for text in (_multisig_text(2, ["alice", "bob"]), _account("alice", "m/84h/1h/0h")[1]):
        cold = parse_cold_destination(text, Network.REGTEST)
        with pytest.raises(ValueError, match="cold address index"):
            cold.address(index)  # type: ignore[arg-type]
