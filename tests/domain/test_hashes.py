"""The two composite hashes against published values (Bitcoin Core, BIP32)."""

from __future__ import annotations

import hashlib

from walletsvc.domain.hashes import hash160, sha256d

# The genesis block header of mainnet; its sha256d (byte-reversed) is the famous block hash.
GENESIS_HEADER = bytes.fromhex(
    "01000000" + "00" * 32 + "3ba3edfd7a7b12b27ac72c3e67768f617fc81bc3888a51323a9fb8aa4b1e5e4a"
    "29ab5f49"
    "ffff001d"
    "1dac2b7c"
)
GENESIS_HASH = "000000000019d6689c085ae165831e934ff763ae46a2a6c172b3f1b60a8ce26f"


def test_sha256d_is_the_block_hash() -> None:
    assert sha256d(GENESIS_HEADER)[::-1].hex() == GENESIS_HASH
    assert sha256d(b"") == hashlib.sha256(hashlib.sha256(b"").digest()).digest()


def test_hash160_of_the_generator_point() -> None:
    # hash160 of G (compressed): the key hash of the well-known private key 1.
    g = bytes.fromhex("0279be667ef9dcbbac55a06295ce870b07029bfcdb2dce28d959f2815b16f81798")
    assert hash160(g).hex() == "751e76e8199196d454941c45d1b3a323f1433bd6"
