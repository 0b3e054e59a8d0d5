"""decode_address: BIP173/BIP350 vectors, base58 on every network, and strictness.

Expected scripts were cross-checked against embit, an independent implementation.
"""

from __future__ import annotations

import pytest

from walletsvc.domain.address import ScriptType, decode_address, script_to_address
from walletsvc.domain.errors import InvalidAddress
from walletsvc.domain.network import Network

MAIN = Network.MAINNET
TEST = Network.TESTNET
SIG = Network.SIGNET
REG = Network.REGTEST

H20 = "751e76e8199196d454941c45d1b3a323f1433bd6"
H32 = "1863143c14c5166804bd19203356da136c985678cd4d27a1b8c6329604903262"

VALID = [
    # BIP173 / BIP350 vectors.
    ("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", MAIN, ScriptType.P2WPKH, "0014" + H20),
    ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", MAIN, ScriptType.P2WPKH, "0014" + H20),
    (
        "tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
        TEST,
        ScriptType.P2WSH,
        "0020" + H32,
    ),
    (
        "tb1qqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesrxh6hy",
        SIG,
        ScriptType.P2WSH,
        "0020000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    (
        "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqzk5jj0",
        MAIN,
        ScriptType.P2TR,
        "512079be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798",
    ),
    (
        "tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c",
        TEST,
        ScriptType.P2TR,
        "5120000000c4a5cad46221b2a187905e5266362b99d5e91c6ce24d165dab93e86433",
    ),
    # Regtest (hrp bcrt).
    ("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", REG, ScriptType.P2WPKH, "0014" + H20),
    (
        "bcrt1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qzf4jry",
        REG,
        ScriptType.P2WSH,
        "0020" + H32,
    ),
    (
        "bcrt1prp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3qg74mmc",
        REG,
        ScriptType.P2TR,
        "5120" + H32,
    ),
    # Base58.
    (
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2",
        MAIN,
        ScriptType.P2PKH,
        "76a91477bff20c60e522dfaa3350c39b030a5d004e839a88ac",
    ),
    (
        "3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy",
        MAIN,
        ScriptType.P2SH,
        "a914b472a266d0bd89c13706a4132ccfb16f7c3b9fcb87",
    ),
    ("mrCDrCybB6J1vRfbwM5hemdJz73FwDBC8r", TEST, ScriptType.P2PKH, "76a914" + H20 + "88ac"),
    ("mrCDrCybB6J1vRfbwM5hemdJz73FwDBC8r", REG, ScriptType.P2PKH, "76a914" + H20 + "88ac"),
    ("2N3vVYSK5XRgVSGWy21PnsRmBUywSQNdCsf", REG, ScriptType.P2SH, "a914" + H20 + "87"),
]


@pytest.mark.parametrize(("address", "network", "script_type", "script_hex"), VALID)
def test_valid_addresses(
    address: str, network: Network, script_type: ScriptType, script_hex: str
) -> None:
    destination = decode_address(address, network)
    assert destination.script_type is script_type
    assert destination.script_pubkey.hex() == script_hex


@pytest.mark.parametrize(("address", "network", "script_type", "script_hex"), VALID)
def test_segwit_round_trip(
    address: str, network: Network, script_type: ScriptType, script_hex: str
) -> None:
    if script_type in (ScriptType.P2PKH, ScriptType.P2SH):
        return
    assert script_to_address(bytes.fromhex(script_hex), network) == address.lower()


def test_uppercase_bech32_is_normalised() -> None:
    destination = decode_address("BC1QW508D6QEJXTDG4Y5R3ZARVARY0C5XW7KV8F3T4", MAIN)
    assert destination.address == "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4"


@pytest.mark.parametrize(
    ("address", "network"),
    [
        # BIP350 invalid vectors.
        ("tc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq5zuyut", MAIN),  # bad hrp
        ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqh2y7hd", MAIN),  # v1 in bech32
        ("tb1z0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vqglt7rf", TEST),  # v2 in bech32
        ("BC1S0XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ54WELL", MAIN),  # v16 bech32
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kemeawh", MAIN),  # v0 in bech32m
        ("tb1q0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq24jc47", TEST),  # v0 bech32m
        ("bc1p38j9r5y49hruaue7wxjce0updqjuyyx0kh56v8s25huc6995vvpql3jow4", MAIN),  # bad char
        ("BC130XLXVLHEMJA6C4DQV22UAPCTQUPFHLXM9H8Z3K2E72Q4K9HCZ7VQ7ZWS8R", MAIN),  # version 17
        ("bc1pw5dgrnzv", MAIN),  # 1-byte program
        (
            "bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v8n0nx0muaewav253zgeav",
            MAIN,
        ),  # 41-byte program
        ("BC1QR508D6QEJXTDG4Y5R3ZARVARYV98GJ9P", MAIN),  # 16-byte v0 program
        ("bc1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7v07qwwzcrf", MAIN),  # padding
        ("tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vpggkg4j", TEST),  # padding
        ("bc1gmk9yu", MAIN),  # empty data
        # BIP173 invalid vectors.
        ("tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3pjxtptv", TEST),  # padding
        ("bc1zw508d6qejxtdg4y5r3zarvaryvqyzf3du", MAIN),  # padding
        (
            "bc10w508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kw5rljs90",
            MAIN,
        ),  # too long
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5", MAIN),  # checksum
        # Base58: bad checksum, bad character.
        ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3", MAIN),
        ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN0", MAIN),
    ],
)
def test_invalid_addresses(address: str, network: Network) -> None:
    with pytest.raises(InvalidAddress):
        decode_address(address, network)


@pytest.mark.parametrize(
    ("address", "network"),
    [
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", REG),
        ("bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", TEST),
        ("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", MAIN),
        ("bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080", TEST),
        ("tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c", REG),
        ("tb1pqqqqp399et2xygdj5xreqhjjvcmzhxw4aywxecjdzew6hylgvsesf3hn0c", MAIN),
        ("1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN2", REG),
        ("3J98t1WpEZ73CNmQviecrnyiWrnqRhWNLy", TEST),
        ("mrCDrCybB6J1vRfbwM5hemdJz73FwDBC8r", MAIN),
    ],
)
def test_other_network_is_refused(address: str, network: Network) -> None:
    with pytest.raises(InvalidAddress) as err:
        decode_address(address, network)
    assert "another network" in err.value.message


@pytest.mark.parametrize(
    "address",
    [
        "tb1p0xlxvlhemja6c4dqv22uapctqupfhlxm9h8z3k2e72q4k9hcz7vq47Zagq",  # BIP350 vector
        "Tb1qrp33g0q5c5txsp9arysrx4k6zdkfs4nce4xj0gdcccefvpysxf3q0sl5k7",
    ],
)
def test_mixed_case_is_refused(address: str) -> None:
    with pytest.raises(InvalidAddress) as err:
        decode_address(address, TEST)
    assert "mixes upper and lower case" in err.value.message


@pytest.mark.parametrize(
    ("address", "version"),
    [
        # Valid BIP350 addresses of versions/lengths nobody can spend safely today.
        ("bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y", 1),
        ("BC1SW50QGDZ25J", 16),
        ("bc1zw508d6qejxtdg4y5r3zarvaryvaxxpcs", 2),
    ],
)
def test_future_witness_versions_are_refused(address: str, version: int) -> None:
    with pytest.raises(InvalidAddress) as err:
        decode_address(address, MAIN)
    assert f"witness version {version}" in err.value.message


@pytest.mark.parametrize(
    "value",
    [None, "", 42, b"bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4", "bc1q w508", "bc1q" + "q" * 100],
)
def test_not_an_address(value: object) -> None:
    with pytest.raises(InvalidAddress):
        decode_address(value, MAIN)


@pytest.mark.parametrize(
    "address",
    [
        "",
        "bcrt1qw508d6qejxtdg4y5r3zarvary0c5xw7kygt080",
        "bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t5",
        "bc1pw508d6qejxtdg4y5r3zarvary0c5xw7kw508d6qejxtdg4y5r3zarvary0c5xw7kt5nd6y",
        "Bc1qw508d6qejxtdg4y5r3zarvary0c5xw7kv8f3t4",
        "1BvBMSEYstWetqTFn5Au4m4GFg7xJaNVN3",
    ],
)
def test_the_field_is_named(address: str) -> None:
    with pytest.raises(InvalidAddress) as err:
        decode_address(address, MAIN, field="payouts[3].address")
    assert err.value.field == "payouts[3].address"
    assert err.value.message.startswith("payouts[3].address ")
    assert err.value.code == "invalid_address"
