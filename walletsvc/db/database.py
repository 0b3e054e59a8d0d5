"""Engine, unit of work, the write locks and the audit appender.

Every state change runs in ``Database.write()``: one transaction that first takes its write
locks, then changes rows and records its audit events, and commits both or neither.

Why locks at all: velocity limits, idempotency keys and the audit hash chain all need "read
the current state, then write" to be atomic. The locks make that true on both databases:
  * SQLite: ``BEGIN IMMEDIATE`` takes the database's RESERVED lock at BEGIN, so no other
    writer can interleave between our reads and writes (https://sqlite.org/lang_transaction.html).
    SQLite has one writer, so every write scope is this one lock; an in-process queue in
    front of it (walletsvc.db.locks) serves writers in arrival order, a freeze first.
  * PostgreSQL: transaction-scoped advisory locks. Everything a payout's limits depend on
    belongs to one wallet, so intake, payout rounds and signing lock their wallet (and share
    the global lock); everything else takes the global lock exclusively, as every write did before.
    READ COMMITTED gives every statement after the lock a snapshot taken after it was
    granted. Applying a freeze takes only the freeze gate, which signers and broadcasters
    hold shared while they act (``UnitOfWork.hold_freeze_gate``), so a freeze never waits
    behind intake or the scanner.
The audit chain: a transaction's events are chained at its very end (``UnitOfWork.finish``).
On SQLite the writer lock already serialises that. On PostgreSQL a writer takes the chain's
head only if it is free at that moment (held then just for the commit); otherwise it
records its events as pending and the one appender (``Database.append_pending_audit``)
chains them right after the commit. No writer waits for the head while holding its locks.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, delete, event, insert, select, text
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry

from walletsvc.keys.integrity import canonical_json, encode_message

from .locks import (
    FREEZE_LOCK,
    GLOBAL_LOCK,
    SQLITE_WRITER,
    LockTable,
    advisory_key,
    wallet_lock,
)
from .models import AuditEvent, AuditHead, PendingAuditEvent, utcnow
from .outbox import (
    EVENT_TYPES,
    PUBLISHED_AUDIT_ACTIONS,
    capture_withdrawal_status_changes,
    outbox_event,
)
from .repositories import ReadUnitOfWork

GENESIS_HASH = "0" * 64
# The longest intake waits for a freeze on its way before it goes on regardless.
FREEZE_WAIT_S = 10.0
log = logging.getLogger(__name__)


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 60})
        _configure_sqlite(engine)
        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: DBAPIConnection, _record: ConnectionPoolEntry) -> None:
        # Let SQLAlchemy's "begin" event below issue BEGIN itself (pysqlite's own implicit
        # BEGIN is DEFERRED and would be too late to take the write lock).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=60000")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = "IMMEDIATE" if conn.get_execution_options().get("walletsvc_write") else "DEFERRED"
        conn.exec_driver_sql(f"BEGIN {mode}")


@dataclass
class AuditRecord:
    actor: str
    action: str
    subject_type: str
    subject_id: str | None
    data: dict[str, Any] = field(default_factory=dict)


# The audit action of every integrity finding at use, and the subject type of a broken head.
INTEGRITY_FAILURE = "integrity.failure"
AUDIT_HEAD_SUBJECT = "audit_head"


def audit_digest(key: bytes, prev_hash: str, event_fields: dict[str, Any]) -> str:
    body = canonical_json(event_fields)
    return hmac.new(key, prev_hash.encode() + body, hashlib.sha256).hexdigest()


def audit_head_tag(key: bytes, last_seq: int, last_hash: str) -> str:
    """The head's tag: without it, deleting the last events and pointing the head at the new
    last one would leave a chain that verifies (a truncated tail)."""
    message = encode_message("audit-head", last_seq, last_hash)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def event_fields(
    seq: int,
    *,
    created_at: datetime,
    actor: str,
    action: str,
    subject_type: str,
    subject_id: str | None,
    data: dict[str, Any],
) -> dict[str, Any]:
    """What an event's hash covers (with the previous hash)."""
    return {
        "seq": seq,
        "created_at": created_at.isoformat(),
        "actor": actor,
        "action": action,
        "subject_type": subject_type,
        "subject_id": subject_id,
        "data": data,
    }


def audit_fields(ev: AuditEvent) -> dict[str, Any]:
    return event_fields(
        ev.seq,
        created_at=ev.created_at,
        actor=ev.actor,
        action=ev.action,
        subject_type=ev.subject_type,
        subject_id=ev.subject_id,
        data=ev.data,
    )


class UnitOfWork(ReadUnitOfWork):
    """One write transaction: the repositories over a session holding its write locks, and
    the audit log. Services never commit: ``Database.write()`` commits when the block ends.

    Audit events are collected as the transaction goes and chained at its end
    (``finish``), all in one multi-row insert: on SQLite under the head (the one writer lock
    already serialises writers); on PostgreSQL under the head if it is free, else recorded
    as pending for the appender.
    """

    def __init__(
        self,
        session: Session,
        audit_key: bytes,
        *,
        inline_audit: bool = True,
        freeze_gate: bool = False,
        freeze_gate_held: bool = True,
    ) -> None:
        super().__init__(session)
        self._audit_key = audit_key
        self._inline_audit = inline_audit
        # PostgreSQL: the freeze gate is an advisory lock of its own (``hold_freeze_gate``).
        self._freeze_gate = freeze_gate
        self._freeze_gate_held = freeze_gate_held
        self.recorded_events = 0
        self._unchained: list[dict[str, Any]] = []
        capture_withdrawal_status_changes(session)

    def hold_freeze_gate(self, *, exclusive: bool = False) -> None:
        """Hold the freeze gate until commit before reading or writing freezes.

        Whoever signs or broadcasts checks for a freeze through this (shared), and applying
        a freeze takes it exclusively: a freeze waits only for the signings and broadcasts in
        flight, and every one after it sees it. On SQLite the one writer lock is the gate.
        """
        if not self._freeze_gate or (self._freeze_gate_held and not exclusive):
            return
        function = "pg_advisory_xact_lock" if exclusive else "pg_advisory_xact_lock_shared"
        self.session.execute(text(f"SELECT {function}(:key)"), {"key": advisory_key(FREEZE_LOCK)})
        self._freeze_gate_held = True

    def audit(
        self,
        actor: str,
        action: str,
        subject_type: str,
        subject_id: str | None,
        data: dict[str, Any] | None = None,
    ) -> None:
        """Record an event of this transaction; it is chained when the transaction ends,
        committed with it or not at all."""
        self.audit_many(actor, action, subject_type, [(subject_id, data or {})])

    def audit_many(
        self,
        actor: str,
        action: str,
        subject_type: str,
        events: Sequence[tuple[str | None, dict[str, Any]]],
    ) -> None:
        """Record one event per (subject_id, data), in order, as ``audit`` would for each.

        They join this transaction's other events and are chained with them at its end, in
        the one multi-row insert (a payout round's thousands of events build no ORM object
        each); ``audit verify`` cannot tell them from single ``audit`` calls. A published
        action also goes to the webhook outbox, as with ``audit``.
        """
        for subject_id, data in events:
            row = {
                "created_at": utcnow(),
                "actor": actor,
                "action": action,
                "subject_type": subject_type,
                "subject_id": subject_id,
                "data": json.loads(json.dumps(data, default=str)),
            }
            self._unchained.append(row)
            self.recorded_events += 1
            if action in PUBLISHED_AUDIT_ACTIONS:
                self.emit(
                    action,
                    {"subject_type": subject_type, "subject_id": subject_id, "data": row["data"]},
                )

    def emit(self, event_type: str, payload: dict[str, Any]) -> None:
        """Publish an event to webhooks, committed (or not) with this transaction.

        Delivery happens later, by the dispatcher (walletsvc.webhooks.dispatcher): this never
        waits on a receiver. ``payload`` must be JSON and hold no secrets."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown webhook event type {event_type!r} (walletsvc.db.outbox)")
        self.session.add(outbox_event(event_type, json.loads(json.dumps(payload, default=str))))

    def finish(self) -> bool:
        """Just before commit: chain this transaction's events. True if (on PostgreSQL) they
        were left pending for the appender instead.

        On PostgreSQL the head is taken here, at the very end, and only if it is free: it is
        then held only for the commit. When another transaction holds it, waiting would
        serialise writers again, so the events go to ``audit_pending`` and the appender
        chains them after the commit.
        """
        if not self._unchained:
            return False
        head: AuditHead | None
        if self._inline_audit:
            head = self.session.get_one(AuditHead, 1)
        else:
            head = self.session.execute(
                select(AuditHead).where(AuditHead.id == 1).with_for_update(skip_locked=True)
            ).scalar_one_or_none()
            if head is None:
                self.session.execute(insert(PendingAuditEvent), self._unchained)
                return True
            # Pending events of others are left to their writers' appends (and to the
            # background pass's, for a writer that died after its commit): looking for them
            # here would cost every write a round trip. The chain stays gap-free either way;
            # an event may land after one committed later than it.
        chain_rows(self.session, self._audit_key, head, self._unchained)
        return False


def head_integrity_finding(session: Session, key: bytes, head: AuditHead) -> dict[str, Any] | None:
    """Refuse to launder a truncated tail: the event recording a broken head, or None.

    Appending re-tags the head, so a head whose tag fails (the last events deleted and the
    head pointed at the new last one) would verify again after the next append. The finding
    goes into the chain first, where ``audit verify`` keeps reporting it and the risk monitor
    freezes on it. Checked wherever events are chained (a writer's own chaining and the
    appender's), once per chaining transaction: one tag and one lookup by primary key.
    """
    if not head.last_seq:
        return None
    reason = None
    if not hmac.compare_digest(head.mac or "", audit_head_tag(key, head.last_seq, head.last_hash)):
        reason = (
            "the audit head fails its integrity tag (the last events removed, the head rewritten?)"
        )
    else:
        last = session.get(AuditEvent, head.last_seq)
        if last is None or last.hash != head.last_hash:
            reason = "the audit head does not match the last event (events removed?)"
    if reason is None:
        return None
    return {
        "created_at": utcnow(),
        "actor": "system",
        "action": INTEGRITY_FAILURE,
        "subject_type": AUDIT_HEAD_SUBJECT,
        "subject_id": None,
        "data": {"reason": reason, "head_seq": head.last_seq},
    }


def chain_rows(session: Session, key: bytes, head: AuditHead, rows: list[dict[str, Any]]) -> None:
    """Give each event (oldest first) the next sequence number and its hash, insert them in
    one statement, and move the head (which the caller holds). A broken head is recorded
    first (``head_integrity_finding``)."""
    finding = head_integrity_finding(session, key, head)
    if finding is not None:
        rows = [finding, *rows]
    chained = []
    seq, prev_hash = head.last_seq, head.last_hash
    for row in rows:
        seq += 1
        digest = audit_digest(key, prev_hash, event_fields(seq, **row))
        chained.append({**row, "seq": seq, "prev_hash": prev_hash, "hash": digest})
        prev_hash = digest
    session.execute(insert(AuditEvent), chained)
    head.last_seq, head.last_hash = seq, prev_hash
    head.mac = audit_head_tag(key, seq, prev_hash)


def chain_pending(
    session: Session, key: bytes, head: AuditHead, *, limit: int = 5_000
) -> AuditHead:
    """Move up to ``limit`` committed pending events into the chain, oldest first (the
    caller holds the head row)."""
    pending = list(
        session.scalars(select(PendingAuditEvent).order_by(PendingAuditEvent.id).limit(limit))
    )
    if not pending:
        return head
    chain_rows(
        session,
        key,
        head,
        [
            {
                "created_at": row.created_at,
                "actor": row.actor,
                "action": row.action,
                "subject_type": row.subject_type,
                "subject_id": row.subject_id,
                "data": row.data,
            }
            for row in pending
        ],
    )
    session.execute(
        delete(PendingAuditEvent).where(PendingAuditEvent.id.in_([row.id for row in pending]))
    )
    return head


# SQLite allows one writer per database file: one queue per file in this process, whichever
# ``Database`` object writes to it.
_SQLITE_QUEUES: dict[str, LockTable] = {}
_SQLITE_QUEUES_GUARD = threading.Lock()


def _sqlite_queue(url: str) -> LockTable:
    with _SQLITE_QUEUES_GUARD:
        return _SQLITE_QUEUES.setdefault(url, LockTable())


class Database:
    def __init__(self, url: str, *, audit_key: bytes) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._write_engine = self.engine.execution_options(walletsvc_write=True)
        self.audit_key = audit_key
        self._queues = _sqlite_queue(url) if self.is_sqlite else LockTable()

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.engine.dialect.name == "sqlite"

    @contextmanager
    def write(
        self,
        *,
        wallet_id: str | None = None,
        also_lock: Sequence[str] | Callable[[], Sequence[str]] = (),
        freeze: bool = False,
        honour_freeze: bool = False,
    ) -> Iterator[UnitOfWork]:
        """A locked write transaction; commits on success, rolls back on any exception.

        The locks (docs/architecture.md, "Concurrency and atomicity"):
          * default: the global lock, exclusively: no other writer of any kind but a freeze;
          * ``wallet_id`` and/or ``also_lock``: the global lock shared, then the ``also_lock``
            names (sorted) and the wallet, exclusively: writers of other wallets (and other
            names) run at the same time;
          * ``freeze``: only the freeze gate, exclusively (applying a freeze);
          * ``honour_freeze``: the freeze gate shared from the start, in the same statement
            as the other locks (a writer that will check for a freeze anyway).
        SQLite has one writer per file: there every scope is that writer lock, taken in
        arrival order (a freeze first).

        ``also_lock`` may be a callable (with ``wallet_id``): it is called once this process's
        queue for the wallet has let the writer through, just before the database locks are
        taken, so a writer can gather work that arrived while it waited (payout intake's
        batches).
        """
        if callable(also_lock) and wallet_id is None:
            raise ValueError("a deferred also_lock needs a wallet_id")
        if self.is_sqlite:
            queue = self._queues.get(SQLITE_WRITER)
        elif freeze:
            queue = self._queues.get(FREEZE_LOCK)
        elif wallet_id is not None:
            queue = self._queues.get(wallet_lock(wallet_id))
        else:
            assert not callable(also_lock)
            queue = self._queues.get(min(also_lock) if also_lock else GLOBAL_LOCK)
        left_pending = False
        with queue.hold(urgent=freeze):
            names = also_lock() if callable(also_lock) else also_lock
            with Session(self._write_engine, expire_on_commit=False) as session, session.begin():
                uow = UnitOfWork(
                    session,
                    self.audit_key,
                    inline_audit=self.is_sqlite,
                    freeze_gate=not self.is_sqlite,
                    freeze_gate_held=freeze or honour_freeze,
                )
                if not self.is_sqlite:
                    self._take_advisory_locks(
                        session, wallet_id, names, freeze=freeze, honour_freeze=honour_freeze
                    )
                yield uow
                left_pending = uow.finish()
        if left_pending:
            try:
                self.append_pending_audit()
            except DBAPIError as exc:
                # The transaction itself has committed: its events wait in audit_pending and
                # the next writer's append chains them.
                log.warning("audit append deferred: %s", type(exc).__name__)

    def freeze_pending(self) -> bool:
        """Whether a freeze of this process is on its way (announced, on SQLite queued for
        the one writer lock, on PostgreSQL on its way to the freeze gate): a writer doing a
        batch of work commits what it has instead of going on."""
        if self._queues.freezes.pending():
            return True
        if self.is_sqlite:
            return self._queues.get(SQLITE_WRITER).urgent_pending()
        return self._queues.get(FREEZE_LOCK).busy()

    @contextmanager
    def freeze_announced(self) -> Iterator[None]:
        """Around a freeze, from its authentication to its commit (``freeze_pending``)."""
        with self._queues.freezes.announce():
            yield

    def wait_for_freezes(self, timeout_s: float = FREEZE_WAIT_S) -> None:
        """Before a batch of intake: let the freezes on their way go first."""
        self._queues.freezes.wait_until_clear(timeout_s)

    def waiting_for_freezes(self) -> int:
        """Writers of this process held back by an announced freeze (for tests)."""
        return self._queues.freezes.waiting()

    def waiting_writers(self, wallet_id: str | None = None) -> int:
        """Writers of this process queued for the wallet's lock (SQLite: for the one writer
        lock), for tests that wait on a queue instead of sleeping."""
        name = (
            SQLITE_WRITER
            if self.is_sqlite
            else (wallet_lock(wallet_id) if wallet_id else GLOBAL_LOCK)
        )
        return self._queues.get(name).waiting()

    @staticmethod
    def _take_advisory_locks(
        session: Session,
        wallet_id: str | None,
        also_lock: Sequence[str],
        *,
        freeze: bool,
        honour_freeze: bool,
    ) -> None:
        """PostgreSQL: transaction-scoped advisory locks, always in the order global, named,
        wallet, freeze gate, so that no two writers wait for each other in a cycle. One
        statement takes them all (PostgreSQL evaluates a target list left to right)."""
        locks: list[tuple[str, bool]] = []  # (name, shared)
        if freeze:
            locks.append((FREEZE_LOCK, False))
        elif wallet_id is None and not also_lock:
            locks.append((GLOBAL_LOCK, False))
        else:
            locks.append((GLOBAL_LOCK, True))
            locks.extend((name, False) for name in sorted(set(also_lock)))
            if wallet_id is not None:
                locks.append((wallet_lock(wallet_id), False))
        if honour_freeze and not freeze:
            locks.append((FREEZE_LOCK, True))
        calls = ", ".join(
            f"{'pg_advisory_xact_lock_shared' if shared else 'pg_advisory_xact_lock'}(:k{i})"
            for i, (_name, shared) in enumerate(locks)
        )
        session.execute(
            text(f"SELECT {calls}"),
            {f"k{i}": advisory_key(name) for i, (name, _shared) in enumerate(locks)},
        )

    def append_pending_audit(self, *, batch: int = 5_000) -> int:
        """Chain every committed pending event into the audit log, oldest first; how many.

        The one appender: it alone locks the head row, briefly, so the chain stays gap-free
        and verifiable while writers run in parallel. Each writer calls it right after its
        commit; one that finds its events already chained by another has nothing to do.
        """
        appended = 0
        while True:
            with Session(self.engine, expire_on_commit=False) as session, session.begin():
                head = session.execute(
                    select(AuditHead).where(AuditHead.id == 1).with_for_update()
                ).scalar_one()
                before = head.last_seq
                head = chain_pending(session, self.audit_key, head, limit=batch)
                count = head.last_seq - before
            appended += count
            if count < batch:
                return appended

    @contextmanager
    def read(self) -> Iterator[ReadUnitOfWork]:
        """A read transaction (no write lock, no audit) with the same repositories."""
        with Session(self.engine, expire_on_commit=False) as session, session.begin():
            yield ReadUnitOfWork(session)

    @contextmanager
    def lookup(self) -> Iterator[Connection]:
        """A bare connection for the single-statement reads every request makes (its API
        token): no session and no unit of work, whose set-up costs more than the read. A
        statement sees what was committed before it, as in ``read``.

        On PostgreSQL in autocommit: one statement needs no transaction, and a BEGIN and a
        ROLLBACK would be two more round trips per request than the read itself."""
        with self.engine.connect() as connection:
            if not self.is_sqlite:
                connection.execution_options(isolation_level="AUTOCOMMIT")
            yield connection

    def ping(self) -> None:
        """Raise if the database cannot run a statement (readiness probes)."""
        with self.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()
