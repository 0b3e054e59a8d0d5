"""Properties of the engine that must hold for every policy, request and history."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from walletsvc.policy import (
    HeldPayout,
    HistorySnapshot,
    PayoutRequest,
    PolicyDocument,
    evaluate,
    history_horizon,
)
from walletsvc.policy.engine import OUTCOME_ORDER

from .factories import NOW, WALLET, entry, make_policy
from .strategies import DESTS, TOKENS, WINDOWS, scenarios, velocity_limits


@settings(max_examples=300)
@given(scenarios(), st.randoms(use_true_random=False))
def test_deterministic_and_independent_of_history_order(
    scenario: tuple[PolicyDocument, PayoutRequest, HistorySnapshot], rnd: Any
) -> None:
    policy, request, snapshot = scenario
    first = evaluate(request, snapshot, policy, NOW)
    assert evaluate(request, snapshot, policy, NOW) == first
    shuffled = list(snapshot.payouts)
    rnd.shuffle(shuffled)
    again = evaluate(
        request, HistorySnapshot(tuple(shuffled), snapshot.allowlist_entry), policy, NOW
    )
    assert again == first


@settings(max_examples=300)
@given(scenarios(), st.integers(0, 30_000))
def test_more_money_never_needs_less(
    scenario: tuple[PolicyDocument, PayoutRequest, HistorySnapshot], extra: int
) -> None:
    policy, small, snapshot = scenario
    large = PayoutRequest(small.wallet, small.destination, small.amount_sat + extra, small.token_id)
    a = evaluate(small, snapshot, policy, NOW)
    b = evaluate(large, snapshot, policy, NOW)
    assert OUTCOME_ORDER[a.outcome] <= OUTCOME_ORDER[b.outcome], (a.to_dict(), b.to_dict())
    if a.required is not None and b.required is not None:
        assert a.required.m <= b.required.m


@settings(max_examples=300)
@given(scenarios())
def test_outcome_agrees_with_the_trace(
    scenario: tuple[PolicyDocument, PayoutRequest, HistorySnapshot],
) -> None:
    policy, request, snapshot = scenario
    decision = evaluate(request, snapshot, policy, NOW)
    results = {r.result for r in decision.rules}
    if results & {"fail", "error"}:
        assert decision.outcome == "deny"
    elif "require_approval" in results:
        assert decision.outcome == "require_approval"
        assert decision.required is not None
        asks = [r for r in decision.rules if r.result == "require_approval"]
        quorum = f"{decision.required.m} of {decision.required.group}"
        assert any(quorum in r.detail for r in asks)
    else:
        assert decision.outcome == "allow"


# A stream of requests from several tokens to several destinations, seconds apart. Every
# request that is not denied holds money (pending approval counts), so it joins the history.
requests_stream = st.lists(
    st.tuples(
        st.integers(0, 900),  # seconds since the previous request
        st.integers(1, 6_000),
        st.sampled_from(DESTS),
        st.sampled_from(TOKENS),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=200, deadline=None)
@given(velocity_limits(), requests_stream)
def test_velocity_limits_hold_over_any_sequence(
    limits: list[dict[str, Any]], stream: list[tuple[int, int, str, str | None]]
) -> None:
    policy = make_policy(velocity=limits)
    horizon = history_horizon(policy)
    accepted: list[HeldPayout] = []
    now = NOW
    for gap, amount, destination, token in stream:
        now += timedelta(seconds=gap)
        # The caller's query: only payouts inside the horizon.
        window = tuple(p for p in accepted if p.created_at >= now - horizon)
        decision = evaluate(
            PayoutRequest(WALLET, destination, amount, token), HistorySnapshot(window), policy, now
        )
        if decision.outcome != "deny":
            accepted.append(HeldPayout(amount, destination, token, now))
    for limit in policy.velocity:
        _assert_never_exceeded(
            accepted, limit.window, limit.scope, limit.max_amount_sat, limit.max_count
        )


def _assert_never_exceeded(
    payouts: list[HeldPayout],
    window: int,
    scope: str,
    max_amount: int | None,
    max_count: int | None,
) -> None:
    keys = {None} if scope == "wallet" else {_key(p, scope) for p in payouts}
    for key in keys:
        mine = [p for p in payouts if scope == "wallet" or _key(p, scope) == key]
        # The busiest closed window ends at some payout; check the window ending at each.
        for last in mine:
            inside = [
                p
                for p in mine
                if last.created_at - timedelta(seconds=window) <= p.created_at <= last.created_at
            ]
            if max_amount is not None:
                assert sum(p.amount_sat for p in inside) <= max_amount
            if max_count is not None:
                assert len(inside) <= max_count


def _key(payout: HeldPayout, scope: str) -> str | None:
    return payout.destination if scope == "destination" else payout.token_id


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 5_000), st.sampled_from(WINDOWS), requests_stream)
def test_trust_ramp_never_exceeded_in_a_period(
    initial: int, period: int, stream: list[tuple[int, int, str, str | None]]
) -> None:
    policy = make_policy(
        allowlist={
            "cooling_off": 0,
            "trust_ramp": {"initial_max_sat": initial, "doubling_period": period},
        }
    )
    listed = entry(address=DESTS[0], approved_ago=timedelta(0))
    accepted: list[HeldPayout] = []
    now = NOW
    for gap, amount, _, token in stream:
        now += timedelta(seconds=gap)
        decision = evaluate(
            PayoutRequest(WALLET, DESTS[0], amount, token),
            HistorySnapshot(tuple(accepted), listed),
            policy,
            now,
        )
        if decision.outcome != "deny":
            accepted.append(HeldPayout(amount, DESTS[0], token, now))
    for last in accepted:
        age_periods = int((last.created_at - NOW).total_seconds()) // period
        cap = initial * 2**age_periods
        inside = [
            p
            for p in accepted
            if last.created_at - timedelta(seconds=period) <= p.created_at <= last.created_at
        ]
        assert sum(p.amount_sat for p in inside) <= cap
