"""The mempool watcher: every unconfirmed transaction that spends one of our coins and that we
did not sign is reported the moment the node tells us about it.

"Ours" is decided by our own records, not by the node: every transaction we sign is stored
(``chain_transactions``) before it is broadcast, so a spend of our coin whose txid is not
stored there was signed by someone else holding our key. That is a theft in progress, and
since Bitcoin Core 28 (full RBF) it can still be replaced until it is mined:
walletsvc.incident.shield answers it.

How transactions arrive: the node pushes txids (``MempoolSource.subscribe``: Core's ZMQ, the
embedded chain's own notification) onto a queue; ``poll`` asks the node which mempool
transactions spend our unspent coins, which catches anything a push missed. ``step`` polls
and checks the queue; the service runs it on a thread that wakes on every push (``run``),
and tests call it directly, so nothing waits on a clock.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from bitcoin.core import CTransaction, b2lx

from walletsvc.db.database import Database
from walletsvc.domain.errors import DependencyUnavailable
from walletsvc.domain.ports import MempoolEntry, MempoolSource

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class StolenCoin:
    wallet_id: str
    txid: str
    vout: int
    amount_sat: int


@dataclass(frozen=True)
class ForeignSpend:
    """A mempool transaction spending coins of ours that we never signed."""

    entry: MempoolEntry
    coins: tuple[StolenCoin, ...]
    seen_at: float  # time.monotonic() when the node told us (the shield measures from here)

    @property
    def wallet_ids(self) -> list[str]:
        return sorted({c.wallet_id for c in self.coins})


TheftHook = Callable[[ForeignSpend], object]


class MempoolWatcher:
    def __init__(
        self, db: Database, source: MempoolSource, *, clock: Callable[[], float] | None = None
    ) -> None:
        self.db = db
        self.source = source
        self.clock = clock or time.monotonic
        self.theft_hooks: list[TheftHook] = []
        self._queue: queue.Queue[tuple[str, float]] = queue.Queue()
        self._looked_at: set[str] = set()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        source.subscribe(self._pushed)

    # -- arrivals ------------------------------------------------------------------------

    def _pushed(self, txid: str) -> None:
        """The node's push (any thread, maybe under the chain's lock): queue it and return."""
        self._queue.put((txid, self.clock()))
        self._wake.set()

    def poll(self) -> int:
        """Queue the mempool spenders of our coins not looked at yet (the fallback for missed
        pushes): one question to the node about our unspent outpoints, however full its
        mempool is."""
        with self.db.read() as uow:
            outpoints = uow.utxos.unspent_outpoints()
        spenders = set(self.source.mempool_spenders(outpoints).values())
        # Forget everything else: what pushes brought and what left the mempool. A txid
        # announced again is then looked at again, at the price of one read.
        self._looked_at &= spenders
        new = sorted(spenders - self._looked_at)
        now = self.clock()
        for txid in new:
            self._queue.put((txid, now))
        return len(new)

    # -- checking ------------------------------------------------------------------------

    def step(self, *, poll: bool = True) -> list[ForeignSpend]:
        """Poll (optionally), then check everything queued; the foreign spends found."""
        if poll:
            self.poll()
        found = []
        while True:
            try:
                txid, seen_at = self._queue.get_nowait()
            except queue.Empty:
                break
            if txid in self._looked_at:
                continue  # pushed and polled, or re-announced after a block
            spend = self._check(txid, seen_at)
            if spend is not None:
                found.append(spend)
                for hook in self.theft_hooks:
                    try:
                        hook(spend)
                    except Exception:  # one failed answer must not stop the next
                        log.exception("theft hook failed for %s", txid)
        return found

    def _check(self, txid: str, seen_at: float) -> ForeignSpend | None:
        """Whether ``txid`` spends our coins without being ours. It counts as looked at only
        once this ran through: a failure (database down) leaves it to the next poll."""
        raw = self.source.mempool_transaction(txid)
        self._looked_at.add(txid)
        if raw is None:
            return None  # already mined or replaced: the scanner and the next push cover it
        tx = CTransaction.deserialize(raw)
        outpoints = [(str(b2lx(i.prevout.hash)), int(i.prevout.n)) for i in tx.vin]
        with self.db.read() as uow:
            if uow.transactions.by_txid(txid) is not None:
                return None  # we signed it
            coins = []
            for prev_txid, vout in outpoints:
                utxo = uow.utxos.by_outpoint(prev_txid, vout)
                if utxo is not None and utxo.spent_height is None:
                    coins.append(StolenCoin(utxo.wallet_id, prev_txid, vout, utxo.amount_sat))
        if not coins:
            return None  # most of the mempool: not ours, one read and done
        entry = self.source.mempool_entry(txid)  # the fees a replacement must outbid
        if entry is None:
            return None
        log.critical(
            "THEFT: mempool transaction %s spends %d of our coins and was not signed by us",
            txid,
            len(coins),
        )
        return ForeignSpend(entry=entry, coins=tuple(coins), seen_at=seen_at)

    # -- the service's thread ------------------------------------------------------------

    def start(self, poll_interval_s: float) -> None:
        self._thread = threading.Thread(
            target=self.run, args=(poll_interval_s,), name="mempool-watcher", daemon=True
        )
        self._thread.start()

    def run(self, poll_interval_s: float) -> None:
        """Check on every push at once, and poll the whole mempool every interval."""
        next_poll = 0.0
        while not self._stop.is_set():
            now = self.clock()
            due = now >= next_poll
            self._wake.clear()  # before the step: a push during it wakes the next one
            try:
                self.step(poll=due)
            except DependencyUnavailable as exc:
                log.warning("mempool watcher: %s", exc.message)
            except Exception:
                log.exception("mempool watcher pass failed")
            if due:
                next_poll = now + poll_interval_s
            self._wake.wait(max(0.0, next_poll - self.clock()))

    def stop(self) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
