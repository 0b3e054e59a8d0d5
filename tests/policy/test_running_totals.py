"""``RunningTotals`` (the signer's batch check) decides exactly as the engine's list path:
for one payout over a history, and for a batch decided one payout after the other, each
seeing the ones accepted before it. The signer's ledger has no API tokens, so the requests
and the history here carry none."""

from __future__ import annotations

from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st

from walletsvc.policy import HistorySnapshot, PayoutRequest, PolicyDocument, evaluate
from walletsvc.policy.engine import HeldPayout, history_horizon
from walletsvc.policy.running import RunningTotals

from .factories import NOW, WALLET
from .strategies import DESTS, scenarios


def _without_tokens(snapshot: HistorySnapshot, policy: PolicyDocument) -> tuple[HeldPayout, ...]:
    """The history as the signer keeps it: no tokens, only the horizon's payouts."""
    since = NOW - history_horizon(policy)
    return tuple(replace(p, token_id=None) for p in snapshot.payouts if p.created_at >= since)


@settings(max_examples=400)
@given(scenarios())
def test_one_decision_matches_the_list_path(
    scenario: tuple[PolicyDocument, PayoutRequest, HistorySnapshot],
) -> None:
    policy, request, snapshot = scenario
    request = replace(request, token_id=None)
    payouts = _without_tokens(snapshot, policy)
    by_list = evaluate(request, HistorySnapshot(payouts, snapshot.allowlist_entry), policy, NOW)
    running = RunningTotals(policy, NOW, payouts).snapshot(
        request.destination, snapshot.allowlist_entry
    )
    assert evaluate(request, running, policy, NOW) == by_list


@settings(max_examples=200)
@given(
    scenarios(),
    st.lists(st.tuples(st.sampled_from(DESTS), st.integers(1, 30_000)), min_size=1, max_size=12),
)
def test_a_batch_matches_the_list_path_payout_by_payout(
    scenario: tuple[PolicyDocument, PayoutRequest, HistorySnapshot],
    batch: list[tuple[str, int]],
) -> None:
    policy, _, snapshot = scenario
    held = _without_tokens(snapshot, policy)
    running = RunningTotals(policy, NOW, held)
    for destination, amount in batch:
        request = PayoutRequest(WALLET, destination, amount, None)
        # The snapshot's allowlist entry is about one destination; the others have none.
        entry = snapshot.allowlist_entry
        if entry is not None and entry.address != destination:
            entry = None
        by_list = evaluate(request, HistorySnapshot(held, entry), policy, NOW)
        assert evaluate(request, running.snapshot(destination, entry), policy, NOW) == by_list
        if by_list.outcome != "deny":  # accepted: it counts against the next ones
            accepted = HeldPayout(amount, destination, None, NOW)
            held += (accepted,)
            running.add(accepted)
