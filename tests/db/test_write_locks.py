"""The write locks: writers served in arrival order (a freeze first), a freeze that never
waits behind other writers on PostgreSQL, and an audit chain that stays gap-free while
writers of different wallets commit in parallel."""

from __future__ import annotations

import threading
from collections.abc import Callable

import pytest
from sqlalchemy import func, select

from tests.conftest import WALLET
from tests.helpers import audit_events, verify_audit
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.locks import FairLock
from walletsvc.db.models import PendingAuditEvent, Wallet
from walletsvc.incident.freeze import freeze

DEADLINE_S = 60  # a generous bound on waiting for an observable condition, never a pause


def _wait_until(condition: Callable[[], bool]) -> None:
    done = threading.Event()
    for _ in range(DEADLINE_S * 100):
        if condition():
            return
        done.wait(0.01)
    raise AssertionError("the condition was never reached")


def test_fair_lock_serves_arrival_order_with_urgent_waiters_first() -> None:
    lock = FairLock()
    order: list[str] = []
    release_first = threading.Event()

    def holder() -> None:
        with lock.hold():
            order.append("holder")
            release_first.wait(DEADLINE_S)

    def waiter(name: str, urgent: bool) -> None:
        with lock.hold(urgent=urgent):
            order.append(name)

    threads = [threading.Thread(target=holder)]
    threads[0].start()
    _wait_until(lambda: order == ["holder"])
    queued = [("w1", False), ("w2", False), ("freeze", True), ("w3", False)]
    for count, (name, urgent) in enumerate(queued, start=1):
        thread = threading.Thread(target=waiter, args=(name, urgent))
        thread.start()
        threads.append(thread)
        _wait_until(lambda count=count: lock.waiting() == count)  # type: ignore[misc]
    release_first.set()
    for thread in threads:
        thread.join(DEADLINE_S)
    assert order == ["holder", "freeze", "w1", "w2", "w3"]


def _wallet_id(runtime: Runtime) -> str:
    with runtime.db.read() as uow:
        wallet = uow.session.scalars(select(Wallet).where(Wallet.name == WALLET)).one()
        return wallet.id


@pytest.mark.parametrize("scope", ["global", "wallet"])
def test_a_freeze_does_not_wait_for_a_writer_in_progress(runtime: Runtime, scope: str) -> None:
    """Intake holds its wallet's lock, the scanner and the rest the global lock: a freeze
    commits while either is still open (PostgreSQL; SQLite has one writer, where the freeze
    goes first in the queue instead: the test above)."""
    if runtime.db.is_sqlite:
        pytest.skip("SQLite has one writer; its queue serves a freeze first (test above)")
    wallet_id = _wallet_id(runtime)
    holding, release = threading.Event(), threading.Event()

    def writer() -> None:
        lock_scope = {"wallet_id": wallet_id} if scope == "wallet" else {}
        with runtime.db.write(**lock_scope) as uow:
            uow.audit("test", "test.holding", "wallet", wallet_id, {})
            holding.set()
            release.wait(DEADLINE_S)

    thread = threading.Thread(target=writer)
    thread.start()
    assert holding.wait(DEADLINE_S)
    try:
        row = freeze(runtime.db, scope="withdrawals", wallet=WALLET, reason="x", actor="t")
        assert thread.is_alive() and not release.is_set(), "the freeze waited for the writer"
    finally:
        release.set()
        thread.join(DEADLINE_S)
    actions = [e.action for e in audit_events(runtime.db)]
    # The freeze committed (and was chained) first, the writer's event after it.
    assert actions[-2:] == ["freeze.applied", "test.holding"]
    assert audit_events(runtime.db, "freeze.applied")[-1].subject_id == row.id
    assert verify_audit(runtime).ok


def test_parallel_writers_keep_the_audit_chain_gap_free(runtime: Runtime) -> None:
    wallet_id = _wallet_id(runtime)
    before = len(audit_events(runtime.db))
    writers, events_each = 8, 5
    start = threading.Barrier(writers)
    errors: list[BaseException] = []

    def writer(n: int) -> None:
        try:
            start.wait(DEADLINE_S)
            for i in range(events_each):
                # Half lock the wallet, half their own name: on PostgreSQL the latter commit
                # in parallel with each other and with the wallet's writers.
                scope = {"wallet_id": wallet_id} if n % 2 else {"also_lock": [f"writer:{n}"]}
                with runtime.db.write(**scope) as uow:  # type: ignore[arg-type]
                    uow.audit("test", "test.parallel", "writer", str(n), {"i": i})
        except BaseException as exc:  # reported below, in the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(writers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(DEADLINE_S)
    assert not errors
    events = audit_events(runtime.db)
    assert len(events) == before + writers * events_each
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    with runtime.db.read() as uow:
        assert uow.session.scalar(select(func.count()).select_from(PendingAuditEvent)) == 0
    report = verify_audit(runtime)
    assert report.ok, report.problems
