"""CompactSize: one encoder, and the size estimates count exactly its bytes."""

from __future__ import annotations

import pytest

from walletsvc.domain.serialize import compact_size
from walletsvc.domain.sizes import varint_size

BOUNDARIES = [0, 0xFC, 0xFD, 0xFFFF, 0x1_0000, 0xFFFF_FFFF, 0x1_0000_0000, 2**64 - 1]


@pytest.mark.parametrize(
    ("n", "size"), list(zip(BOUNDARIES, [1, 1, 3, 3, 5, 5, 9, 9], strict=True))
)
def test_varint_size_is_the_length_of_the_encoding(n: int, size: int) -> None:
    assert varint_size(n) == len(compact_size(n)) == size


def test_negative_lengths_are_refused() -> None:
    with pytest.raises(ValueError):
        compact_size(-1)
    with pytest.raises(ValueError):
        varint_size(-1)
