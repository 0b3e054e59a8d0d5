"""Velocity totals kept up to date across a batch of decisions.

The engine's list path (``HistorySnapshot(payouts=...)``) walks every held payout for each
velocity rule of each decision: deciding a batch of n payouts one after the other, each
seeing the ones before it, walks n × (history + n) payouts. A 2,000-payout round cost the
signer 4.8 s that way (docs/performance.md, "Payout rounds"). ``RunningTotals`` sums the
history once per window and adds each accepted payout as it goes; a decision reads its
windows' totals (``HistorySnapshot.velocity_totals``) and only the destination's own
payouts (for the trust ramp). ``held_totals`` in the engine is the reference it must equal.

For a history without API tokens (the signer's own ledger): a request without a token
counts every held payout in a "token" window, as the list path does.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta

from walletsvc.policy.document import PolicyDocument, normalize_address
from walletsvc.policy.engine import (
    AllowlistEntry,
    HeldPayout,
    HeldTotal,
    HistorySnapshot,
    velocity_windows,
)


class RunningTotals:
    """Held satoshis and counts per velocity window, for the whole wallet and per
    destination, as of ``now``."""

    def __init__(self, policy: PolicyDocument, now: datetime, held: Iterable[HeldPayout]) -> None:
        self._windows = velocity_windows(policy)
        self._since = {window: now - timedelta(seconds=window) for _, window in self._windows}
        self._all: dict[int, tuple[int, int]] = {window: (0, 0) for window in self._since}
        self._by_destination: dict[str, dict[int, tuple[int, int]]] = {}
        self._payouts_to: dict[str, list[HeldPayout]] = {}
        for payout in held:
            self.add(payout)

    def add(self, payout: HeldPayout) -> None:
        """Count a held (or just accepted) payout in every window it falls in."""
        if payout.token_id is not None:
            raise ValueError("RunningTotals counts histories without API tokens")
        destination = normalize_address(payout.destination)
        self._payouts_to.setdefault(destination, []).append(payout)
        own = self._by_destination.setdefault(destination, {})
        for window, since in self._since.items():
            # Inclusive lower bound and no upper bound, as the engine's list path counts.
            if payout.created_at >= since:
                amount, count = self._all[window]
                self._all[window] = (amount + payout.amount_sat, count + 1)
                amount, count = own.get(window, (0, 0))
                own[window] = (amount + payout.amount_sat, count + 1)

    def snapshot(self, destination: str, entry: AllowlistEntry | None) -> HistorySnapshot:
        """What the engine needs to decide a payout to ``destination`` (without a token)."""
        address = normalize_address(destination)
        own = self._by_destination.get(address, {})
        totals = []
        for scope, window in self._windows:
            amount, count = own.get(window, (0, 0)) if scope == "destination" else self._all[window]
            totals.append(HeldTotal(scope, window, amount, count))
        return HistorySnapshot(
            payouts=tuple(self._payouts_to.get(address, ())),
            allowlist_entry=entry,
            velocity_totals=tuple(totals),
        )
