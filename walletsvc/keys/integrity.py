"""Integrity: the one encoding every MAC message is built with, and the row-tag interface.

A MAC message is a domain label followed by typed fields. Each field is written as a one-byte
type tag, an eight-byte big-endian length and the payload, so the encoding can be parsed back
field by field: no two different (label, fields) tuples encode alike. A field holding the old
``|`` separator cannot shift the boundary between fields, ``None`` is not ``""``, ``1`` is not
``"1"``. The row messages themselves are defined in :mod:`walletsvc.db.tags`.

Services get a :class:`RowTagger` (tag and verify, nothing else), never the KEK.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence
from datetime import datetime
from typing import NoReturn, Protocol, TypeAlias

from walletsvc.domain.canonical import canonical_json, content_digest

__all__ = [
    "Field",
    "HmacRowTagger",
    "RowTagger",
    "canonical_json",
    "content_digest",
    "encode_message",
]

_VERSION = b"walletsvc/mac/v1"
_LENGTH_BYTES = 8

# A field: text, whole number, raw bytes, yes/no, a timestamp, absent, or a sequence of them.
Field: TypeAlias = "str | int | bytes | bool | datetime | Sequence[Field] | None"

_NONE, _STR, _INT, _BYTES, _BOOL, _TIME, _SEQ = b"N", b"S", b"I", b"B", b"T", b"D", b"L"


def encode_message(domain: str, *fields: Field) -> bytes:
    """The canonical bytes of ``fields`` under the label ``domain`` (e.g. "staff")."""
    if not isinstance(domain, str) or not domain:
        raise ValueError("a MAC message needs a non-empty domain label")
    return _VERSION + _encode(domain) + b"".join(_encode(f) for f in fields)


def _encode(value: Field) -> bytes:
    tag, payload = _typed(value)
    return tag + len(payload).to_bytes(_LENGTH_BYTES, "big") + payload


def _typed(value: Field) -> tuple[bytes, bytes]:
    # bool before int: True is an int to Python, but a different value here.
    if value is None:
        return _NONE, b""
    if isinstance(value, bool):
        return _BOOL, b"1" if value else b"0"
    if isinstance(value, int):
        return _INT, str(value).encode("ascii")
    if isinstance(value, str):
        return _STR, value.encode("utf-8")
    if isinstance(value, bytes | bytearray | memoryview):
        return _BYTES, bytes(value)
    if isinstance(value, datetime):
        return _TIME, value.isoformat().encode("ascii")
    if isinstance(value, Sequence):
        return _SEQ, b"".join(_encode(item) for item in value)
    raise TypeError(f"a MAC message field cannot be of type {type(value).__name__}")


class RowTagger(Protocol):
    """Tags a row's encoded message and checks a stored tag (the service side of the KEK)."""

    def tag(self, message: bytes) -> str:
        """The hex tag of ``message``."""
        ...

    def verify(self, message: bytes, tag: str | None) -> bool:
        """Whether ``tag`` is the tag of ``message``; malformed or missing tags are False."""
        ...


class HmacRowTagger:
    """HMAC-SHA256 row tags under one key (the KEK's row-MAC subkey). Never shows the key."""

    __slots__ = ("_key",)

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise ValueError("a row-tag key must be 32 bytes")
        self._key = bytes(key)

    def __repr__(self) -> str:
        return "HmacRowTagger(<key hidden>)"

    __str__ = __repr__

    def __reduce__(self) -> NoReturn:
        raise TypeError("a row tagger cannot be pickled or copied")

    def tag(self, message: bytes) -> str:
        return hmac.new(self._key, message, hashlib.sha256).hexdigest()

    def verify(self, message: bytes, tag: str | None) -> bool:
        if not isinstance(tag, str):
            return False
        try:
            given = tag.encode("ascii")
        except UnicodeEncodeError:
            return False
        return hmac.compare_digest(self.tag(message).encode("ascii"), given)
