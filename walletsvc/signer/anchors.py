"""The audit heads the signer has seen: anchors of the service's audit log outside its database.

Every signature request carries the audit head (sequence number, hash) at that moment, and the
background pass hands it over once more; the signer records each head that moved forward
(``audit_anchor`` records of its ledger) and refuses one that went back or that changed at a
sequence number it recorded. Each event's hash covers its predecessor's, so an anchored event
pins every event before it: whoever holds the database *and* the audit key can rewrite the
chain consistently, but not so that an anchored event keeps the hash the signer recorded.

``walletsvc audit verify`` asks for every anchor (:func:`page`, in compact pages) and checks
each against the chain, not only the last: a chain rewritten and then grown past the last
anchor is re-anchored by the next head the signer accepts (the signer cannot see the events
between two heads), but the earlier anchors still name the events as they were.
"""

from __future__ import annotations

import re
from typing import Any

from walletsvc.domain.errors import SigningRefused

from . import wire
from .state import SignerState

PAGE_LIMIT = 50_000  # anchors per answer: 50,000 x ~75 bytes is under 4 MiB
_HASH = re.compile(r"[0-9a-f]{64}")


def parse_head(value: object) -> tuple[int, str]:
    """``{"seq": int >= 0, "hash": 64 lower-case hex}``, strictly."""
    if not isinstance(value, dict):
        raise wire.WireError("audit_head must be an object {seq, hash}")
    seq, head_hash = value.get("seq"), value.get("hash")
    if isinstance(seq, bool) or not isinstance(seq, int) or seq < 0:
        raise wire.WireError("seq must be an integer >= 0")
    if not isinstance(head_hash, str) or not _HASH.fullmatch(head_hash):
        raise wire.WireError("hash must be 64 lower-case hex digits")
    return seq, head_hash


def is_new(state: SignerState, seq: int, head_hash: str) -> bool:
    """Whether ``(seq, head_hash)`` moves the anchor forward (then the caller records it).
    SigningRefused when the head went back or an anchored event changed."""
    anchored = state.audit_anchors.get(seq)
    if anchored is not None and anchored != head_hash:
        raise SigningRefused(f"audit event {seq} changed since the signer anchored it")
    last = state.audit_anchor
    if last is not None and seq < last[0]:
        raise SigningRefused(f"the audit head went back from {last[0]} to {seq}")
    return last is None or seq > last[0]


def page(state: SignerState, params: dict[str, Any]) -> dict[str, Any]:
    """The anchors after sequence number ``after``, at most ``limit``, as two parallel lists
    (compact: no key repeated per anchor), and where the next page starts (None: done)."""
    after, limit = params.get("after", 0), params.get("limit", PAGE_LIMIT)
    for name, value, least in (("after", after, 0), ("limit", limit, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < least:
            raise wire.WireError(f"{name} must be an integer >= {least}")
    limit = min(limit, PAGE_LIMIT)
    seqs = [seq for seq in state.audit_anchors if seq > after]  # recorded in rising order
    chosen = seqs[:limit]
    return {
        "seqs": chosen,
        "hashes": [state.audit_anchors[seq] for seq in chosen],
        "next_after": chosen[-1] if len(seqs) > limit else None,
    }
