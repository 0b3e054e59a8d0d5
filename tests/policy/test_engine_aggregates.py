"""The aggregate path (per-window totals, as the intake's indexed SUMs give them) decides
exactly as the list path (every held payout within the horizon) does."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import given, settings

from walletsvc.policy import (
    HistorySnapshot,
    PayoutRequest,
    PolicyDocument,
    evaluate,
    held_totals,
    policy_hash,
    trust_ramp_period,
)
from walletsvc.policy.engine import HeldTotal, normalize_address

from .factories import NOW, WALLET, held, history, make_policy
from .strategies import scenarios


def _aggregate_snapshot(
    policy: PolicyDocument, request: PayoutRequest, snapshot: HistorySnapshot
) -> HistorySnapshot:
    """What the intake builds: the totals, and only the destination's payouts in the ramp."""
    period = trust_ramp_period(policy)
    destination = normalize_address(request.destination)
    ramp_payouts = tuple(
        p
        for p in snapshot.payouts
        if period is not None
        and normalize_address(p.destination) == destination
        and p.created_at >= NOW - period
    )
    return HistorySnapshot(
        ramp_payouts,
        snapshot.allowlist_entry,
        velocity_totals=held_totals(request, snapshot.payouts, policy, NOW),
    )


@settings(max_examples=500)
@given(scenarios())
def test_the_aggregate_path_decides_as_the_list_path(
    scenario: tuple[PolicyDocument, PayoutRequest, HistorySnapshot],
) -> None:
    policy, request, snapshot = scenario
    by_list = evaluate(request, snapshot, policy, NOW)
    by_totals = evaluate(request, _aggregate_snapshot(policy, request, snapshot), policy, NOW)
    assert by_totals == by_list


@settings(max_examples=200)
@given(scenarios())
def test_the_given_revision_is_recorded(
    scenario: tuple[PolicyDocument, PayoutRequest, HistorySnapshot],
) -> None:
    policy, request, snapshot = scenario
    decision = evaluate(request, snapshot, policy, NOW, revision=policy_hash(policy))
    assert decision == evaluate(request, snapshot, policy, NOW)


_POLICY = make_policy(
    velocity=[{"id": "daily", "window": 86400, "scope": "wallet", "max_amount_sat": 1_000}]
)
_REQUEST = PayoutRequest(WALLET, "bcrt1qaaa", 100, None)


def test_a_window_without_its_total_denies() -> None:
    snapshot = HistorySnapshot(velocity_totals=(HeldTotal("wallet", 3600, 0, 0),))
    decision = evaluate(_REQUEST, snapshot, _POLICY, NOW)
    assert decision.outcome == "deny"
    assert decision.rules[3].rule == "velocity.daily"
    assert decision.rules[3].result == "error"


def test_totals_are_read_instead_of_the_list() -> None:
    # The list would allow (it is empty); the totals say 950 sat are already held.
    totals = (HeldTotal("wallet", 86400, 950, 3),)
    decision = evaluate(_REQUEST, HistorySnapshot(velocity_totals=totals), _POLICY, NOW)
    assert decision.outcome == "deny"
    assert "1050 sat > 1000 sat" in decision.rules[3].detail
    assert evaluate(_REQUEST, history(), _POLICY, NOW).outcome == "allow"


def test_a_bad_total_denies() -> None:
    for bad in (HeldTotal("wallet", 86400, -1, 0), HeldTotal("wallet", 86400, 0, -1)):
        decision = evaluate(_REQUEST, HistorySnapshot(velocity_totals=(bad,)), _POLICY, NOW)
        assert decision.outcome == "deny"
        assert decision.rules[3].result == "error"


def test_held_totals_count_by_scope_and_window() -> None:
    policy = make_policy(
        velocity=[
            {"id": "w", "window": 600, "scope": "wallet", "max_amount_sat": 10**6},
            {"id": "d", "window": 600, "scope": "destination", "max_amount_sat": 10**6},
            {"id": "t", "window": 3600, "scope": "token", "max_amount_sat": 10**6},
        ]
    )
    payouts = (
        held(10, ago=timedelta(seconds=600), destination="BCRT1QAAA", token_id="t1"),
        held(20, ago=timedelta(seconds=601), destination="bcrt1qaaa", token_id="t1"),
        held(40, ago=timedelta(seconds=5), destination="bcrt1qbbb", token_id="t2"),
    )
    request = PayoutRequest(WALLET, "bcrt1qaaa", 1, "t1")
    assert held_totals(request, payouts, policy, NOW) == (
        HeldTotal("destination", 600, 10, 1),
        HeldTotal("token", 3600, 30, 2),
        HeldTotal("wallet", 600, 50, 2),
    )
