"""The webhook signature: ``X-Walletsvc-Signature: t=<unix seconds>,v1=<hex>``.

``v1`` is HMAC-SHA256 under the webhook's secret over ``"<t>.<body>"`` (the exact bytes sent),
the scheme Stripe made familiar: the timestamp inside the MAC lets a receiver refuse old
replays, and the body is signed as sent, so no re-serialisation can break a check.
"""

from __future__ import annotations

import hashlib
import hmac

HEADER = "X-Walletsvc-Signature"


def signature(secret: str, timestamp: int, body: bytes) -> str:
    message = str(timestamp).encode() + b"." + body
    return hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()


def signature_header(secret: str, timestamp: int, body: bytes) -> str:
    return f"t={timestamp},v1={signature(secret, timestamp, body)}"


def verify(secret: str, header: str, body: bytes, *, now: int, tolerance_s: int = 300) -> bool:
    """What a receiver does (docs/api.md shows the same in a few lines): parse, check the
    timestamp is recent, compare the MAC in constant time."""
    fields = dict(part.split("=", 1) for part in header.split(",") if "=" in part)
    try:
        timestamp = int(fields["t"])
    except (KeyError, ValueError):
        return False
    if abs(now - timestamp) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, timestamp, body), fields.get("v1", ""))
