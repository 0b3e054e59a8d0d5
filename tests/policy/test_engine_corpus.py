"""The engine against a corpus of cases (cedar's integration-testing style).

Each case lists the policy (overrides of a minimal document), the request, the history, the
expected outcome, the expected result of each named rule, and the quorum required.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

import pytest

from walletsvc.policy import (
    Decision,
    HeldPayout,
    HistorySnapshot,
    PayoutRequest,
    PolicyDocument,
    evaluate,
    history_horizon,
    policy_hash,
)
from walletsvc.policy.document import Risk, RiskRule

from .factories import DEST, NOW, OTHER, TOKEN, entry, held, history, make_policy, request

H = timedelta(hours=1)
D = timedelta(days=1)

TIERS = [
    {"above_sat": 10_000, "group": "treasury", "m": 2},
    {"above_sat": 100_000, "group": "treasury", "m": 3},
]
RAMP = {"initial_max_sat": 1_000, "doubling_period": "1d"}


def velocity(**limit: Any) -> dict[str, Any]:
    return {"velocity": [{"id": "v", "window": "1h", **limit}]}


@dataclass(frozen=True)
class Case:
    name: str
    policy: dict[str, Any]
    request: PayoutRequest
    outcome: str
    rules: dict[str, str]
    required: tuple[str, int] | None = None
    history: HistorySnapshot = field(default_factory=HistorySnapshot)
    now: datetime = NOW


CASES = [
    # --- nothing configured
    Case(
        "empty policy allows",
        {},
        request(1_000),
        "allow",
        {
            "request": "pass",
            "denylist": "pass",
            "max_per_payout": "skip",
            "velocity": "skip",
            "allowlist": "skip",
            "trust_ramp": "skip",
            "approval_tier": "skip",
            "risk": "skip",
        },
    ),
    # --- max_per_payout
    Case(
        "at max", {"max_per_payout_sat": 5_000}, request(5_000), "allow", {"max_per_payout": "pass"}
    ),
    Case(
        "over max",
        {"max_per_payout_sat": 5_000},
        request(5_001),
        "deny",
        {"max_per_payout": "fail"},
    ),
    Case(
        "max zero blocks", {"max_per_payout_sat": 0}, request(1), "deny", {"max_per_payout": "fail"}
    ),
    # --- velocity amount and count; the new request counts
    Case(
        "velocity sum at limit",
        velocity(max_amount_sat=2_000),
        request(500),
        "allow",
        {"velocity.v": "pass"},
        history=history(held(1_000), held(500)),
    ),
    Case(
        "velocity sum over limit",
        velocity(max_amount_sat=2_000),
        request(501),
        "deny",
        {"velocity.v": "fail"},
        history=history(held(1_000), held(500)),
    ),
    Case(
        "velocity first request alone over limit",
        velocity(max_amount_sat=2_000),
        request(2_001),
        "deny",
        {"velocity.v": "fail"},
    ),
    Case(
        "velocity count at limit",
        velocity(max_count=3),
        request(1),
        "allow",
        {"velocity.v": "pass"},
        history=history(held(1), held(1)),
    ),
    Case(
        "velocity count over limit",
        velocity(max_count=3),
        request(1),
        "deny",
        {"velocity.v": "fail"},
        history=history(held(1), held(1), held(1)),
    ),
    Case(
        "velocity count passes, amount fails",
        velocity(max_count=10, max_amount_sat=100),
        request(60),
        "deny",
        {"velocity.v": "fail"},
        history=history(held(50)),
    ),
    # --- window boundaries
    Case(
        "payout exactly one window old counts",
        velocity(max_amount_sat=1_000),
        request(1),
        "deny",
        {"velocity.v": "fail"},
        history=history(held(1_000, ago=H)),
    ),
    Case(
        "payout older than the window does not count",
        velocity(max_amount_sat=1_000),
        request(1),
        "allow",
        {"velocity.v": "pass"},
        history=history(held(1_000, ago=H + timedelta(seconds=1))),
    ),
    Case(
        "future-dated payout counts",
        velocity(max_amount_sat=1_000),
        request(1),
        "deny",
        {"velocity.v": "fail"},
        history=history(held(1_000, ago=-timedelta(minutes=10))),
    ),
    # --- scopes
    Case(
        "destination scope ignores other destinations",
        velocity(scope="destination", max_amount_sat=1_000),
        request(1_000),
        "allow",
        {"velocity.v": "pass"},
        history=history(held(900, destination=OTHER)),
    ),
    Case(
        "destination scope counts the same destination",
        velocity(scope="destination", max_amount_sat=1_000),
        request(101),
        "deny",
        {"velocity.v": "fail"},
        history=history(held(900, destination=DEST)),
    ),
    Case(
        "destination scope sees through bech32 case",
        velocity(scope="destination", max_amount_sat=1_000),
        request(101),
        "deny",
        {"velocity.v": "fail"},
        history=history(held(900, destination=DEST.upper())),
    ),
    Case(
        "token scope ignores other tokens",
        velocity(scope="token", max_count=1),
        request(1),
        "allow",
        {"velocity.v": "pass"},
        history=history(held(1, token_id="tok_other")),
    ),
    Case(
        "token scope counts the same token",
        velocity(scope="token", max_count=1),
        request(1),
        "deny",
        {"velocity.v": "fail"},
        history=history(held(1, token_id=TOKEN)),
    ),
    Case(
        "wallet scope counts everything",
        velocity(scope="wallet", max_count=2),
        request(1),
        "deny",
        {"velocity.v": "fail"},
        history=history(held(1, token_id="a", destination=OTHER), held(1, token_id="b")),
    ),
    Case(
        "several velocity limits each in the trace",
        {
            "velocity": [
                {"id": "b-daily", "window": "1d", "max_amount_sat": 10_000},
                {"id": "a-hourly", "window": "1h", "max_amount_sat": 1_000},
            ]
        },
        request(500),
        "deny",
        {"velocity.a-hourly": "fail", "velocity.b-daily": "pass"},
        history=history(held(600, ago=timedelta(minutes=30)), held(5_000, ago=5 * H)),
    ),
    # --- denylist
    Case(
        "denylisted destination",
        {"allowlist": {"denylist": [DEST]}},
        request(1),
        "deny",
        {"denylist": "fail", "allowlist": "pass"},
    ),
    Case(
        "denylist is case-insensitive for bech32",
        {"allowlist": {"denylist": [DEST.upper()]}},
        request(1),
        "deny",
        {"denylist": "fail"},
    ),
    Case(
        "denylist does not hit others",
        {"allowlist": {"denylist": [OTHER]}},
        request(1),
        "allow",
        {"denylist": "pass"},
    ),
    Case(
        "denied allowlist entry",
        {},
        request(1),
        "deny",
        {"denylist": "fail"},
        history=history(allowlist_entry=entry(status="denied")),
    ),
    # --- allowlist
    Case(
        "required allowlist, missing, deny",
        {"allowlist": {"required": True}},
        request(1),
        "deny",
        {"allowlist": "fail"},
    ),
    Case(
        "required allowlist, active and cooled",
        {"allowlist": {"required": True, "cooling_off": "24h"}},
        request(1),
        "allow",
        {"allowlist": "pass"},
        history=history(allowlist_entry=entry(approved_ago=D)),
    ),
    Case(
        "required allowlist, still cooling off",
        {"allowlist": {"required": True, "cooling_off": "24h"}},
        request(1),
        "deny",
        {"allowlist": "fail"},
        history=history(allowlist_entry=entry(approved_ago=D - timedelta(seconds=1))),
    ),
    Case(
        "required allowlist, pending entry",
        {"allowlist": {"required": True}},
        request(1),
        "deny",
        {"allowlist": "fail"},
        history=history(allowlist_entry=entry(approved_ago=None, status="pending")),
    ),
    Case(
        "required allowlist, removed entry",
        {"allowlist": {"required": True}},
        request(1),
        "deny",
        {"allowlist": "fail"},
        history=history(allowlist_entry=entry(status="removed")),
    ),
    Case(
        "required allowlist, active without approval time",
        {"allowlist": {"required": True, "cooling_off": 0}},
        request(1),
        "deny",
        {"allowlist": "fail"},
        history=history(allowlist_entry=entry(approved_ago=None)),
    ),
    Case(
        "allowlist not required, missing",
        {"allowlist": {"required": False}},
        request(1),
        "allow",
        {"allowlist": "pass"},
    ),
    Case(
        "missing entry needs the highest tier's quorum",
        {
            "allowlist": {"required": True, "on_missing": "require_approval"},
            "approval_tiers": TIERS,
        },
        request(1),
        "require_approval",
        {"allowlist": "require_approval", "approval_tier": "pass"},
        ("treasury", 3),
    ),
    Case(
        "missing entry needs the configured quorum",
        {
            "allowlist": {
                "required": True,
                "on_missing": "require_approval",
                "approval": {"group": "security", "m": 1},
            }
        },
        request(1),
        "require_approval",
        {"allowlist": "require_approval", "approval_tier": "skip"},
        ("security", 1),
    ),
    # --- trust ramp (cooling-off 1d, then 1_000 sat per day, doubling each day)
    Case(
        "ramp: first day after cooling-off, within",
        {"allowlist": {"cooling_off": "1d", "trust_ramp": RAMP}},
        request(1_000),
        "allow",
        {"trust_ramp": "pass"},
        history=history(allowlist_entry=entry(approved_ago=D + H)),
    ),
    Case(
        "ramp: first day after cooling-off, over",
        {"allowlist": {"cooling_off": "1d", "trust_ramp": RAMP}},
        request(1_001),
        "deny",
        {"trust_ramp": "fail"},
        history=history(allowlist_entry=entry(approved_ago=D + H)),
    ),
    Case(
        "ramp: after two full periods, four times",
        {"allowlist": {"cooling_off": "1d", "trust_ramp": RAMP}},
        request(4_000),
        "allow",
        {"trust_ramp": "pass"},
        history=history(allowlist_entry=entry(approved_ago=3 * D)),
    ),
    Case(
        "ramp: counts what the entry received in the last period",
        {"allowlist": {"cooling_off": "1d", "trust_ramp": RAMP}},
        request(600),
        "deny",
        {"trust_ramp": "fail"},
        history=history(held(500, destination=DEST), allowlist_entry=entry(approved_ago=D + H)),
    ),
    Case(
        "ramp: ignores what other destinations received",
        {"allowlist": {"cooling_off": "1d", "trust_ramp": RAMP}},
        request(600),
        "allow",
        {"trust_ramp": "pass"},
        history=history(held(500, destination=OTHER), allowlist_entry=entry(approved_ago=D + H)),
    ),
    Case(
        "ramp: not a usable entry, the ramp does not apply",
        {"allowlist": {"cooling_off": "1d", "trust_ramp": RAMP}},
        request(50_000),
        "allow",
        {"trust_ramp": "skip", "allowlist": "pass"},
    ),
    Case(
        "ramp: very old entry is capped at the supply, not overflowing",
        {"allowlist": {"cooling_off": 0, "trust_ramp": {**RAMP, "doubling_period": 1}}},
        request(2_100_000_000_000_000),
        "allow",
        {"trust_ramp": "pass"},
        history=history(allowlist_entry=entry(approved_ago=timedelta(days=365))),
    ),
    # --- approval tiers (strictly above)
    Case(
        "below every tier",
        {"approval_tiers": TIERS},
        request(10_000),
        "allow",
        {"approval_tier": "pass"},
    ),
    Case(
        "above the first tier",
        {"approval_tiers": TIERS},
        request(10_001),
        "require_approval",
        {"approval_tier": "require_approval"},
        ("treasury", 2),
    ),
    Case(
        "above the highest tier",
        {"approval_tiers": TIERS},
        request(100_001),
        "require_approval",
        {"approval_tier": "require_approval"},
        ("treasury", 3),
    ),
    Case(
        "tier above zero catches everything",
        {"approval_tiers": [{"above_sat": 0, "group": "ops", "m": 1}]},
        request(1),
        "require_approval",
        {"approval_tier": "require_approval"},
        ("ops", 1),
    ),
    # --- combinations
    Case(
        "strongest requirement wins: allowlist's larger m",
        {
            "allowlist": {
                "required": True,
                "on_missing": "require_approval",
                "approval": {"group": "security", "m": 3},
            },
            "approval_tiers": TIERS,
        },
        request(20_000),
        "require_approval",
        {"allowlist": "require_approval", "approval_tier": "require_approval"},
        ("security", 3),
    ),
    Case(
        "strongest requirement wins: a tie goes to the tier",
        {
            "allowlist": {
                "required": True,
                "on_missing": "require_approval",
                "approval": {"group": "security", "m": 2},
            },
            "approval_tiers": TIERS,
        },
        request(20_000),
        "require_approval",
        {"allowlist": "require_approval", "approval_tier": "require_approval"},
        ("treasury", 2),
    ),
    Case(
        "deny wins over require_approval",
        {"approval_tiers": TIERS, "max_per_payout_sat": 50_000},
        request(60_000),
        "deny",
        {"approval_tier": "require_approval", "max_per_payout": "fail"},
    ),
    Case(
        "velocity deny with a tier",
        {"approval_tiers": TIERS, **velocity(max_amount_sat=30_000)},
        request(20_000),
        "deny",
        {"approval_tier": "require_approval", "velocity.v": "fail"},
        history=history(held(15_000)),
    ),
    Case(
        "every rule passes",
        {
            "max_per_payout_sat": 50_000,
            **velocity(max_amount_sat=100_000, max_count=10),
            "allowlist": {"required": True, "cooling_off": "1d", "trust_ramp": RAMP},
            "approval_tiers": TIERS,
        },
        request(5_000),
        "allow",
        {
            "request": "pass",
            "denylist": "pass",
            "max_per_payout": "pass",
            "velocity.v": "pass",
            "allowlist": "pass",
            "trust_ramp": "pass",
            "approval_tier": "pass",
        },
        history=history(held(5_000), allowlist_entry=entry(approved_ago=5 * D)),
    ),
    # --- bad input never fails open
    Case("zero amount", {}, request(0), "deny", {"request": "error"}),
    Case("negative amount", {}, request(-5), "deny", {"request": "error"}),
    Case(
        "string amount",
        {"max_per_payout_sat": 10},
        PayoutRequest("pool", DEST, "5", TOKEN),  # type: ignore[arg-type]
        "deny",
        {"request": "error", "max_per_payout": "error"},
    ),
    Case(
        "amount above supply",
        {},
        request(21_000_000 * 10**8 + 1),
        "deny",
        {"request": "error"},
    ),
    Case("empty destination", {}, request(1, destination=" "), "deny", {"request": "fail"}),
    Case(
        "policy for another wallet",
        {"wallet": "exchange"},
        request(1),
        "deny",
        {"request": "fail"},
    ),
    Case(
        "naive now",
        velocity(max_amount_sat=100),
        request(1),
        "deny",
        {"request": "error"},
        now=NOW.replace(tzinfo=None),
    ),
    Case(
        "naive created_at in history",
        velocity(max_amount_sat=100),
        request(1),
        "deny",
        {"velocity.v": "error"},
        history=history(HeldPayout(1, OTHER, None, NOW.replace(tzinfo=None))),
    ),
    Case(
        "allowlist entry for another address",
        {"allowlist": {"required": True}},
        request(1),
        "deny",
        {"allowlist": "error", "denylist": "error"},
        history=history(allowlist_entry=entry(address=OTHER)),
    ),
    Case(
        "bad amount in history",
        velocity(max_amount_sat=10**9),
        request(1),
        "deny",
        {"velocity.v": "error"},
        history=history(held(-5)),
    ),
]


def _decide(case: Case) -> tuple[Decision, PolicyDocument]:
    policy = make_policy(**case.policy)
    return evaluate(case.request, case.history, policy, case.now), policy


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_corpus(case: Case) -> None:
    decision, policy = _decide(case)
    results = {r.rule: r.result for r in decision.rules}
    assert decision.outcome == case.outcome, decision.to_dict()
    for rule, expected in case.rules.items():
        assert results.get(rule) == expected, (rule, decision.to_dict())
    required = (decision.required.group, decision.required.m) if decision.required else None
    assert required == case.required
    assert decision.policy_hash == policy_hash(policy)
    # Structural invariants of every decision.
    assert len(results) == len(decision.rules), "rule ids are unique"
    assert all(r.detail for r in decision.rules), "every result explains itself"
    if case.outcome != "require_approval":
        assert decision.required is None


def test_trace_lists_every_rule_in_a_fixed_order() -> None:
    policy = make_policy(
        max_per_payout_sat=1,
        velocity=[
            {"id": "zeta", "window": "1h", "max_count": 1},
            {"id": "alpha", "window": "1h", "max_count": 1},
        ],
    )
    decision = evaluate(request(1), history(), policy, NOW)
    assert [r.rule for r in decision.rules] == [
        "request",
        "denylist",
        "max_per_payout",
        "velocity.alpha",
        "velocity.zeta",
        "allowlist",
        "trust_ramp",
        "approval_tier",
        "risk",
    ]


def test_to_dict_matches_the_contract() -> None:
    policy = make_policy(approval_tiers=TIERS)
    decision = evaluate(request(20_000), history(), policy, NOW)
    data = decision.to_dict()
    assert set(data) == {"outcome", "rules", "required"}
    assert data["outcome"] == "require_approval"
    assert data["required"] == {"group": "treasury", "m": 2}
    assert all(set(r) == {"rule", "result", "detail"} for r in data["rules"])
    allowed = evaluate(request(1), history(), policy, NOW).to_dict()
    assert allowed["required"] is None


def test_unknown_risk_rule_denies() -> None:
    # Loading refuses unknown kinds; a document built around validation still fails closed.
    rule = RiskRule.model_construct(id="night", kind="odd_hours", action="deny", params={})
    policy = make_policy().model_copy(update={"risk": Risk.model_construct(rules=(rule,))})
    decision = evaluate(request(1), history(), policy, NOW)
    assert decision.outcome == "deny"
    assert {r.rule: r.result for r in decision.rules}["risk.night"] == "error"


def test_history_horizon_is_the_longest_window() -> None:
    assert history_horizon(make_policy()) == timedelta(0)
    policy = make_policy(
        velocity=[
            {"id": "a", "window": "1h", "max_count": 1},
            {"id": "b", "window": "2d", "max_count": 1},
        ]
    )
    assert history_horizon(policy) == 2 * D
    ramp = make_policy(allowlist={"trust_ramp": {"initial_max_sat": 1, "doubling_period": "7d"}})
    assert history_horizon(ramp) == 7 * D


def test_history_outside_the_horizon_changes_nothing() -> None:
    policy = make_policy(
        velocity=[{"id": "d", "window": "1d", "max_amount_sat": 1_000}],
        allowlist={"trust_ramp": RAMP, "cooling_off": 0},
    )
    old = held(10**9, ago=history_horizon(policy) + timedelta(seconds=1), destination=DEST)
    with_old = evaluate(request(900), history(old, allowlist_entry=entry()), policy, NOW)
    without = evaluate(request(900), history(allowlist_entry=entry()), policy, NOW)
    assert with_old == without
