"""Canonical JSON: the one byte form of a JSON value that every content hash is taken over.

Sorted keys, no whitespace, ASCII only (non-ASCII text as \\u escapes), and values JSON has no
type for (datetimes, decimals) as their ``str()``. Two equal values give equal bytes, so a
digest names content, not the way a dict happened to be built. Pure standard library: the
policy engine hashes documents with it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any


def canonical_json(value: Any) -> bytes:
    """The canonical bytes of ``value`` (sorted keys, compact separators, ASCII)."""
    return json.dumps(
        value, sort_keys=True, separators=(",", ":"), ensure_ascii=True, default=str
    ).encode("ascii")


def content_digest(value: Any) -> str:
    """SHA-256 hex of :func:`canonical_json`: the digest that names a piece of content."""
    return hashlib.sha256(canonical_json(value)).hexdigest()
