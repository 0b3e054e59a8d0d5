"""Builders for policy tests: documents, requests and histories with keyword-only overrides."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

from walletsvc.policy import (
    GOVERNED_ACTIONS,
    AllowlistEntry,
    HeldPayout,
    HistorySnapshot,
    PayoutRequest,
    PolicyDocument,
    parse_policy,
)

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)
WALLET = "pool"
DEST = "bcrt1qdestination0000000000000000000000000"
OTHER = "bcrt1qsomeoneelse00000000000000000000000000"
TOKEN = "tok_engine"

GOVERNANCE: dict[str, Any] = {a: {"group": "treasury", "m": 2} for a in GOVERNED_ACTIONS}


def policy_dict(**overrides: Any) -> dict[str, Any]:
    """A minimal valid document (version and governance only) plus ``overrides``."""
    doc: dict[str, Any] = {"version": 1, "governance": copy.deepcopy(GOVERNANCE)}
    doc.update(copy.deepcopy(overrides))
    return doc


def make_policy(**overrides: Any) -> PolicyDocument:
    return parse_policy(policy_dict(**overrides))


def request(
    amount_sat: int = 1_000,
    *,
    destination: str = DEST,
    token_id: str | None = TOKEN,
    wallet: str = WALLET,
) -> PayoutRequest:
    return PayoutRequest(wallet, destination, amount_sat, token_id)


def held(
    amount_sat: int,
    *,
    ago: timedelta = timedelta(minutes=5),
    destination: str = OTHER,
    token_id: str | None = "tok_other",
) -> HeldPayout:
    return HeldPayout(amount_sat, destination, token_id, NOW - ago)


def entry(
    *,
    address: str = DEST,
    approved_ago: timedelta | None = timedelta(days=3),
    status: str = "active",
) -> AllowlistEntry:
    since = None if approved_ago is None else NOW - approved_ago
    return AllowlistEntry(address, since, status)  # type: ignore[arg-type]


def history(*payouts: HeldPayout, allowlist_entry: AllowlistEntry | None = None) -> HistorySnapshot:
    return HistorySnapshot(tuple(payouts), allowlist_entry)
