"""The write locks: writers served in arrival order (a freeze first), a freeze that never
waits behind other writers on PostgreSQL, and an audit chain that stays gap-free while
writers of different wallets commit in parallel."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import func, select, text

from tests.conftest import WALLET
from tests.helpers import audit_events, verify_audit
from walletsvc.bootstrap.runtime import Runtime
from walletsvc.db.database import UnitOfWork
from walletsvc.db.locks import FairLock
from walletsvc.db.models import PendingAuditEvent, Wallet
from walletsvc.db.models_webhooks import OutboxEvent
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


@contextmanager
def _head_held_elsewhere(runtime: Runtime) -> Iterator[None]:
    """PostgreSQL: another transaction holds the chain's head, so a writer's events go to
    ``audit_pending`` and its appender waits for the head. SQLite chains inline (its one
    writer lock serialises writers), so nothing is held there."""
    if runtime.db.is_sqlite:
        yield
        return
    with runtime.db.engine.connect() as connection, connection.begin():
        connection.execute(text("SELECT last_seq FROM audit_head WHERE id = 1 FOR UPDATE"))
        yield


def _pending(runtime: Runtime) -> int:
    with runtime.db.read() as uow:
        return int(uow.session.scalar(select(func.count()).select_from(PendingAuditEvent)) or 0)


def _write_in_thread(
    runtime: Runtime, work: Callable[[UnitOfWork], None], events: int
) -> threading.Thread:
    """Run ``work`` in a write transaction on a thread of its own; return once its
    ``events`` are committed (pending on PostgreSQL while the head is held elsewhere)."""
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            with runtime.db.write(also_lock=["test:audit-many"]) as uow:
                work(uow)
        except BaseException as exc:  # reported by the caller's join below
            errors.append(exc)

    thread = threading.Thread(target=writer)
    thread.start()
    if runtime.db.is_sqlite:
        thread.join(DEADLINE_S)
    else:
        _wait_until(lambda: _pending(runtime) == events or not thread.is_alive())
    assert not errors, errors
    return thread


def test_audit_many_joins_the_chain_in_order_and_publishes_like_audit(runtime: Runtime) -> None:
    """A payout round's bulk events: chained with the transaction's other events, in order,
    gap-free (through the appender on PostgreSQL when the head is busy), and a published
    action reaches the webhook outbox once per event, as ``audit`` does."""
    wallet_id = _wallet_id(runtime)
    before = len(audit_events(runtime.db))

    def work(uow: UnitOfWork) -> None:
        uow.audit("test", "test.before", "wallet", wallet_id, {})
        uow.audit_many(
            "test", "hot.refill_alert", "wallet", [(wallet_id, {"n": n}) for n in range(3)]
        )
        uow.audit_many("test", "test.bulk", "wallet", [(None, {"n": 3}), ("x", {"n": 4})])

    with _head_held_elsewhere(runtime):
        thread = _write_in_thread(runtime, work, events=6)
        if not runtime.db.is_sqlite:  # committed, not chained while the head is held
            assert len(audit_events(runtime.db)) == before
    thread.join(DEADLINE_S)

    events = audit_events(runtime.db)
    assert [e.seq for e in events] == list(range(1, len(events) + 1))
    assert [(e.action, e.subject_id, e.data) for e in events[before:]] == [
        ("test.before", wallet_id, {}),
        ("hot.refill_alert", wallet_id, {"n": 0}),
        ("hot.refill_alert", wallet_id, {"n": 1}),
        ("hot.refill_alert", wallet_id, {"n": 2}),
        ("test.bulk", None, {"n": 3}),
        ("test.bulk", "x", {"n": 4}),
    ]
    assert _pending(runtime) == 0
    report = verify_audit(runtime)
    assert report.ok, report.problems
    with runtime.db.read() as uow:
        published = list(
            uow.session.scalars(
                select(OutboxEvent)
                .where(OutboxEvent.event_type == "hot.refill_alert")
                .order_by(OutboxEvent.seq)
            )
        )
    assert [p.payload for p in published] == [
        {"subject_type": "wallet", "subject_id": wallet_id, "data": {"n": n}} for n in range(3)
    ]


def test_the_appender_records_a_deleted_tail_before_chaining(runtime: Runtime) -> None:
    """The head check holds wherever events are chained: the last event deleted, the next
    events (pending on PostgreSQL, then chained by the appender) come after an
    ``integrity.failure`` naming the broken head."""
    with runtime.db.write() as uow:
        uow.audit("test", "test.doomed", "wallet", None, {})
    last = audit_events(runtime.db)[-1]
    with runtime.db.engine.begin() as connection:
        connection.execute(text("DELETE FROM audit_events WHERE seq = :seq"), {"seq": last.seq})

    with _head_held_elsewhere(runtime):
        thread = _write_in_thread(
            runtime, lambda uow: uow.audit("test", "test.after", "wallet", None, {}), events=1
        )
    thread.join(DEADLINE_S)

    finding, after = audit_events(runtime.db)[-2:]
    assert (finding.seq, finding.action, finding.subject_type) == (
        last.seq + 1,
        "integrity.failure",
        "audit_head",
    )
    assert finding.data == {
        "reason": "the audit head does not match the last event (events removed?)",
        "head_seq": last.seq,
    }
    assert after.action == "test.after"
    problems = verify_audit(runtime).problems
    assert f"audit event {last.seq} is missing" in " ".join(problems)
