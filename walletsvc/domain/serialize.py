"""Bitcoin's wire encodings shared by the signer, the BIP143 sighasher and the size estimates."""

from __future__ import annotations

import struct


def compact_size(n: int) -> bytes:
    """Bitcoin's CompactSize encoding of ``n``: the length prefix of scripts, inputs, outputs."""
    if n < 0:
        raise ValueError("a CompactSize cannot be negative")
    if n < 0xFD:
        return bytes([n])
    if n <= 0xFFFF:
        return b"\xfd" + struct.pack("<H", n)
    if n <= 0xFFFF_FFFF:
        return b"\xfe" + struct.pack("<I", n)
    return b"\xff" + struct.pack("<Q", n)


def serialize_output(amount_sat: int, script_pubkey: bytes) -> bytes:
    """One transaction output: 8-byte little-endian amount, then the length-prefixed script."""
    return struct.pack("<q", amount_sat) + compact_size(len(script_pubkey)) + script_pubkey
