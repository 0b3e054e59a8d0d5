"""Gauges read from the database at scrape time: payouts by status, pending approvals by kind,
hot balances against their thresholds, freezes, and how far the scanner is behind the chain.

Read when Prometheus scrapes rather than kept in process memory, so every process (API,
worker) reports the same numbers and a restart loses nothing. One read transaction and, for
the scanner lag, one call for the chain tip; a dependency that is down drops its series from
that scrape (``walletsvc_metrics_state_up`` says so) instead of failing the whole scrape.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from walletsvc.bootstrap.wallet_views import list_wallet_views
from walletsvc.domain.withdrawal import WithdrawalStatus

if TYPE_CHECKING:
    from walletsvc.bootstrap.runtime import Runtime

log = logging.getLogger(__name__)


class ServiceStateCollector(Collector):
    def __init__(self, runtime: Runtime) -> None:
        self.runtime = runtime

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily(
            "walletsvc_metrics_state_up",
            "1 when the state gauges could be read from this source",
            labels=["source"],
        )
        try:
            yield from self._database_state()
            up.add_metric(["database"], 1)
        except Exception as exc:
            log.warning("state metrics: the database is unavailable (%s)", type(exc).__name__)
            up.add_metric(["database"], 0)
        try:
            yield from self._scanner_lag()
            up.add_metric(["chain"], 1)
        except Exception as exc:
            log.warning("state metrics: the chain is unavailable (%s)", type(exc).__name__)
            up.add_metric(["chain"], 0)
        yield up

    def _database_state(self) -> Iterator[GaugeMetricFamily]:
        rt = self.runtime
        with rt.db.read() as uow:
            by_status = uow.withdrawals.count_by_status()
            pending = uow.approval_requests.pending_count_by_kind()
            freezes = [(f.scope, f.wallet_id) for f in uow.freezes.active(None)]
            names = {w.id: w.name for w in uow.wallets.all_by_name()}
        payouts = GaugeMetricFamily("walletsvc_withdrawals", "Payouts by status", labels=["status"])
        for status in WithdrawalStatus:
            payouts.add_metric([status.value], by_status.get(status.value, 0))
        yield payouts

        approvals = GaugeMetricFamily(
            "walletsvc_pending_approvals", "Approval requests waiting, by kind", labels=["kind"]
        )
        for kind, count in sorted(pending.items()):
            approvals.add_metric([kind], count)
        yield approvals

        frozen = GaugeMetricFamily(
            "walletsvc_frozen",
            "Active freezes, by scope and wallet (`*`: every wallet)",
            labels=["scope", "wallet"],
        )
        counts: dict[tuple[str, str], int] = {}
        for scope, wallet_id in freezes:
            key = (scope, "*" if wallet_id is None else names.get(wallet_id, wallet_id))
            counts[key] = counts.get(key, 0) + 1
        for (scope, wallet), count in sorted(counts.items()):
            frozen.add_metric([scope, wallet], count)
        yield frozen

        views = list_wallet_views(rt.db, rt.tags, min_confirmations=rt.settings.min_confirmations)
        wallets = {view["name"]: view for view in views["wallets"]}
        balance = GaugeMetricFamily(
            "walletsvc_hot_balance_sat",
            "Hot wallet balance (confirmed, spendable) in satoshis",
            labels=["wallet"],
        )
        thresholds = GaugeMetricFamily(
            "walletsvc_hot_threshold_sat",
            "Hot balance thresholds: sweep above ceiling down to target; refill below floor",
            labels=["wallet", "threshold"],
        )
        for name, view in sorted(wallets.items()):
            balance.add_metric([name], view["balances"]["confirmed_sat"])
            limits = view.get("hot_thresholds")
            if limits:
                for which in ("floor", "target", "ceiling"):
                    thresholds.add_metric([name, which], limits[f"{which}_sat"])
        yield balance
        yield thresholds

    def _scanner_lag(self) -> Iterator[GaugeMetricFamily]:
        rt = self.runtime
        tip = rt.chain.tip().height
        with rt.db.read() as uow:
            scanned = uow.scanned_blocks.highest()
        lag = GaugeMetricFamily(
            "walletsvc_scanner_lag_blocks", "Blocks the scanner has not processed yet"
        )
        lag.add_metric([], max(0, tip - (scanned if scanned is not None else -1)))
        yield lag
        height = GaugeMetricFamily("walletsvc_chain_tip_height", "The chain tip's height")
        height.add_metric([], tip)
        yield height


def state_registry(runtime: Runtime) -> CollectorRegistry:
    """A registry of this runtime's state gauges (one per runtime: tests open several)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(ServiceStateCollector(runtime))
    return registry
