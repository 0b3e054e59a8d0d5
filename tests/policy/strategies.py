"""Hypothesis strategies for policies, requests and histories."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import strategies as st

from walletsvc.policy import HeldPayout, HistorySnapshot, PayoutRequest, PolicyDocument

from .factories import NOW, WALLET, entry, make_policy

DESTS = ["bcrt1qaaa", "bcrt1qbbb", "bcrt1qccc"]
TOKENS = ["t1", "t2", None]
WINDOWS = [60, 600, 3600]


@st.composite
def velocity_limits(draw: st.DrawFn) -> list[dict[str, Any]]:
    n = draw(st.integers(0, 3))
    limits = []
    for i in range(n):
        limit: dict[str, Any] = {
            "id": f"v{i}",
            "window": draw(st.sampled_from(WINDOWS)),
            "scope": draw(st.sampled_from(["wallet", "destination", "token"])),
        }
        amount = draw(st.none() | st.integers(0, 20_000))
        count = draw(st.none() | st.integers(0, 8))
        if amount is None and count is None:
            amount = 10_000
        if amount is not None:
            limit["max_amount_sat"] = amount
        if count is not None:
            limit["max_count"] = count
        limits.append(limit)
    return limits


@st.composite
def tiers(draw: st.DrawFn) -> list[dict[str, Any]]:
    thresholds = sorted(draw(st.sets(st.integers(0, 20_000), max_size=3)))
    ms = sorted(
        draw(st.lists(st.integers(1, 5), min_size=len(thresholds), max_size=len(thresholds)))
    )
    groups = draw(
        st.lists(st.sampled_from(["treasury", "board"]), min_size=len(ms), max_size=len(ms))
    )
    return [
        {"above_sat": t, "group": g, "m": m} for t, m, g in zip(thresholds, ms, groups, strict=True)
    ]


@st.composite
def policies(draw: st.DrawFn) -> PolicyDocument:
    doc: dict[str, Any] = {"velocity": draw(velocity_limits()), "approval_tiers": draw(tiers())}
    if draw(st.booleans()):
        doc["max_per_payout_sat"] = draw(st.integers(0, 20_000))
    if draw(st.booleans()):
        allowlist: dict[str, Any] = {
            "required": draw(st.booleans()),
            "on_missing": draw(st.sampled_from(["deny", "require_approval"])),
            "cooling_off": draw(st.sampled_from([0, 60, 3600])),
            "denylist": draw(st.lists(st.sampled_from(DESTS[2:]), max_size=1)),
        }
        if draw(st.booleans()) or not doc["approval_tiers"]:
            allowlist["approval"] = {"group": "security", "m": draw(st.integers(1, 5))}
        if draw(st.booleans()):
            allowlist["trust_ramp"] = {
                "initial_max_sat": draw(st.integers(1, 5_000)),
                "doubling_period": draw(st.sampled_from(WINDOWS)),
            }
        doc["allowlist"] = allowlist
    return make_policy(**doc)


held_payouts = st.builds(
    lambda amount, dest, token, ago: HeldPayout(amount, dest, token, NOW - timedelta(seconds=ago)),
    st.integers(1, 10_000),
    st.sampled_from(DESTS),
    st.sampled_from(TOKENS),
    st.integers(-30, 4_000),
)


@st.composite
def snapshots(draw: st.DrawFn, destination: str) -> HistorySnapshot:
    payouts = tuple(draw(st.lists(held_payouts, max_size=8)))
    allowlist_entry = draw(
        st.none()
        | st.builds(
            lambda ago, status: entry(
                address=destination, approved_ago=timedelta(seconds=ago), status=status
            ),
            st.integers(0, 20_000),
            st.sampled_from(["active", "active", "pending", "removed", "denied"]),
        )
    )
    return HistorySnapshot(payouts, allowlist_entry)


@st.composite
def scenarios(draw: st.DrawFn) -> tuple[PolicyDocument, PayoutRequest, HistorySnapshot]:
    policy = draw(policies())
    destination = draw(st.sampled_from(DESTS))
    request = PayoutRequest(
        WALLET, destination, draw(st.integers(1, 30_000)), draw(st.sampled_from(TOKENS))
    )
    return policy, request, draw(snapshots(destination))
