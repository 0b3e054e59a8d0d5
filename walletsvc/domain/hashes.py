"""Bitcoin's two composite hashes, each written once for the whole service."""

from __future__ import annotations

import hashlib


def sha256d(data: bytes) -> bytes:
    """SHA256(SHA256(data)): txids, BIP143 sighashes, merkle nodes, block hashes."""
    return hashlib.sha256(hashlib.sha256(data).digest()).digest()


def hash160(data: bytes) -> bytes:
    """RIPEMD160(SHA256(data)): key hashes and BIP32 fingerprints.

    OpenSSL 3 moved RIPEMD-160 to its legacy provider; the one here still provides it, and
    tests/keys/test_hd.py checks it against a known digest so a build without it fails loudly.
    """
    return hashlib.new("ripemd160", hashlib.sha256(data).digest()).digest()
