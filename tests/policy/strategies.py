"""Hypothesis strategies for policies, requests and histories."""

from __future__ import annotations

import copy
import random
from datetime import timedelta
from typing import Any

from hypothesis import strategies as st

from walletsvc.domain.money import MAX_MONEY
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


# --- Policy edits and payouts for the ratchet's outcome property ----------------------------

GROUPS = ["treasury", "security", "ops"]
COOLING_OFFS = [0, 60, 3600, 86400, 3650 * 86400]
RAMP_PERIODS = [60, 3600, 86400]
LIMIT_WINDOWS = [*WINDOWS, 7200, 86400]


def _amounts(top: int) -> st.SearchStrategy[int]:
    return st.integers(0, top) | st.sampled_from([0, 1, top // 2, top])


@st.composite
def _edit(draw: st.DrawFn, doc: dict[str, Any], top: int) -> None:
    """Change one field (or add or remove one rule) of ``doc`` in place."""
    part = draw(st.sampled_from(["max", "velocity", "allowlist", "tiers"]))
    if part == "max":
        value = draw(st.none() | _amounts(top))
        doc.pop("max_per_payout_sat", None)
        if value is not None:
            doc["max_per_payout_sat"] = value
    elif part == "velocity":
        _edit_velocity(draw, doc, top)
    elif part == "allowlist":
        _edit_allowlist(draw, doc, top)
    else:
        _edit_tiers(draw, doc, top)


def _edit_velocity(draw: st.DrawFn, doc: dict[str, Any], top: int) -> None:
    limits: list[dict[str, Any]] = doc.setdefault("velocity", [])
    if not limits or draw(st.integers(0, 4)) == 0:
        limits.append(
            {
                "id": f"new{len(limits)}",
                "window": draw(st.sampled_from(LIMIT_WINDOWS)),
                "scope": draw(st.sampled_from(["wallet", "destination", "token"])),
                "max_amount_sat": draw(_amounts(top)),
            }
        )
        return
    i = draw(st.integers(0, len(limits) - 1))
    field = draw(st.sampled_from(["remove", "id", "window", "scope", "amount", "count"]))
    if field == "remove":
        del limits[i]
    elif field == "id":
        limits[i]["id"] = f"renamed{i}"
    elif field == "window":
        limits[i]["window"] = draw(st.sampled_from(LIMIT_WINDOWS))
    elif field == "scope":
        limits[i]["scope"] = draw(st.sampled_from(["wallet", "destination", "token"]))
    else:
        key = "max_amount_sat" if field == "amount" else "max_count"
        value = draw(st.none() | (_amounts(top) if field == "amount" else st.integers(0, 10)))
        limits[i].pop(key, None)
        if value is not None:
            limits[i][key] = value


def _quorums() -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({"group": st.sampled_from(GROUPS), "m": st.integers(1, 4)})


def _ramps(top: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries(
        {
            "initial_max_sat": st.integers(1, max(1, top)),
            "doubling_period": st.sampled_from(RAMP_PERIODS),
        }
    )


def _edit_allowlist(draw: st.DrawFn, doc: dict[str, Any], top: int) -> None:
    allowlist = doc.get("allowlist")
    if allowlist is None:
        doc["allowlist"] = {
            "required": draw(st.booleans()),
            "on_missing": draw(st.sampled_from(["deny", "require_approval"])),
            "cooling_off": draw(st.sampled_from(COOLING_OFFS)),
        }
        if draw(st.booleans()):
            doc["allowlist"]["trust_ramp"] = draw(_ramps(top))
        if draw(st.booleans()):
            doc["allowlist"]["approval"] = draw(_quorums())
        return
    field = draw(
        st.sampled_from(
            [
                *("remove", "required", "on_missing", "cooling_off", "ramp", "initial"),
                *("period", "approval", "denylist"),
            ]
        )
    )
    ramp = allowlist.get("trust_ramp")
    if field == "remove":
        del doc["allowlist"]
    elif field == "required":
        allowlist["required"] = not allowlist.get("required", False)
    elif field == "on_missing":
        allowlist["on_missing"] = draw(st.sampled_from(["deny", "require_approval"]))
    elif field == "cooling_off":
        allowlist["cooling_off"] = draw(st.sampled_from(COOLING_OFFS))
    elif field == "ramp" or ramp is None:
        allowlist["trust_ramp"] = draw(st.none() | _ramps(top))
    elif field == "initial":
        ramp["initial_max_sat"] = draw(st.integers(1, max(1, top)))
    elif field == "period":
        ramp["doubling_period"] = draw(st.sampled_from(RAMP_PERIODS))
    elif field == "approval":
        allowlist["approval"] = draw(st.none() | _quorums())
    else:
        allowlist["denylist"] = draw(st.lists(st.sampled_from(DESTS), unique=True))


def _edit_tiers(draw: st.DrawFn, doc: dict[str, Any], top: int) -> None:
    tiers_: list[dict[str, Any]] = doc.setdefault("approval_tiers", [])
    field = draw(st.sampled_from(["add", "remove", "m", "group", "above"]))
    if field == "add" or not tiers_:
        tiers_.append({"above_sat": draw(_amounts(top)), **draw(_quorums())})
        return
    i = draw(st.integers(0, len(tiers_) - 1))
    if field == "remove":
        del tiers_[i]
    elif field == "m":
        tiers_[i]["m"] = draw(st.integers(1, 4))
    elif field == "group":
        tiers_[i]["group"] = draw(st.sampled_from(GROUPS))
    else:
        tiers_[i]["above_sat"] = draw(_amounts(top))


@st.composite
def edited(draw: st.DrawFn, doc: dict[str, Any], top: int) -> dict[str, Any]:
    """``doc`` with one to three edits; ``top`` is the scale of its amounts."""
    out = copy.deepcopy(doc)
    for _ in range(draw(st.integers(1, 3))):
        draw(_edit(out, top))
    return out


def _interesting_amounts(docs: tuple[PolicyDocument, ...]) -> list[int]:
    values = {1}
    for doc in docs:
        for tier in doc.approval_tiers:
            values |= {tier.above_sat, tier.above_sat + 1}
        if doc.max_per_payout_sat is not None:
            values |= {doc.max_per_payout_sat, doc.max_per_payout_sat + 1}
        ramp = doc.allowlist.trust_ramp if doc.allowlist else None
        if ramp is not None:
            values |= {ramp.initial_max_sat << k for k in range(4)}
    return sorted(v for v in values if v > 0)


def _interesting_ages(docs: tuple[PolicyDocument, ...]) -> list[int]:
    """Seconds: around each cooling-off and ramp step, and each velocity window."""
    values = {0, 1}
    for doc in docs:
        values |= {v.window for v in doc.velocity}
        if doc.allowlist is None:
            continue
        co = doc.allowlist.cooling_off
        period = doc.allowlist.trust_ramp.doubling_period if doc.allowlist.trust_ramp else 3600
        values |= {co + k * period for k in range(4)}
    return sorted({max(0, v + d) for v in values for d in (-1, 0, 1)})


def payouts_under(
    rnd: random.Random, docs: tuple[PolicyDocument, ...]
) -> tuple[PayoutRequest, HistorySnapshot]:
    """A payout and a history that probe the edges of both documents' rules.

    Drawn from a seeded ``random.Random`` (itself drawn by hypothesis): many payouts per pair
    of documents for the price of one hypothesis draw.
    """
    amounts = _interesting_amounts(docs)
    ages = _interesting_ages(docs)

    def amount() -> int:
        return rnd.choice(amounts) if rnd.random() < 0.6 else rnd.randint(1, max(amounts) * 2)

    def age() -> int:
        return rnd.choice(ages) if rnd.random() < 0.6 else rnd.randint(-60, max(ages) * 2)

    destination = rnd.choice(DESTS)
    request = PayoutRequest(WALLET, destination, min(amount(), MAX_MONEY), rnd.choice(TOKENS))
    held = tuple(
        HeldPayout(
            min(amount(), MAX_MONEY),
            rnd.choice(DESTS),
            rnd.choice(TOKENS),
            NOW - timedelta(seconds=age()),
        )
        for _ in range(rnd.randint(0, 6))
    )
    statuses = ["active", "active", "active", "pending", "removed", "denied"]
    allowlist_entry = (
        None
        if rnd.random() < 0.25
        else entry(
            address=destination,
            approved_ago=timedelta(seconds=age()),
            status=rnd.choice(statuses),
        )
    )
    return request, HistorySnapshot(held, allowlist_entry)
