"""Bitcoin's variable-length integer, written once for the signer and the size estimates."""

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
