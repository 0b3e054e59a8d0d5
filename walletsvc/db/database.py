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
    belongs to one wallet, so intake and signing lock their wallet (and share the global
    lock); everything else takes the global lock exclusively, as every write did before.
    READ COMMITTED gives every statement after the lock a snapshot taken after it was
    granted. Applying a freeze takes only the freeze gate, which signers and broadcasters
    hold shared while they act (``UnitOfWork.hold_freeze_gate``), so a freeze never waits
    behind intake or the scanner.
The audit chain: on SQLite each event is chained inside its transaction (the writer lock
already serialises them); on PostgreSQL each transaction records its events as pending and
the single appender (``Database.append_pending_audit``) chains them right after the commit,
holding the head row only for that.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, create_engine, event, select, text
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
from .repositories import ReadUnitOfWork

GENESIS_HASH = "0" * 64
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


def audit_digest(key: bytes, prev_hash: str, event_fields: dict[str, Any]) -> str:
    body = canonical_json(event_fields)
    return hmac.new(key, prev_hash.encode() + body, hashlib.sha256).hexdigest()


def audit_head_tag(key: bytes, last_seq: int, last_hash: str) -> str:
    """The head's tag: without it, deleting the last events and pointing the head at the new
    last one would leave a chain that verifies (a truncated tail)."""
    message = encode_message("audit-head", last_seq, last_hash)
    return hmac.new(key, message, hashlib.sha256).hexdigest()


def audit_fields(ev: AuditEvent) -> dict[str, Any]:
    return {
        "seq": ev.seq,
        "created_at": ev.created_at.isoformat(),
        "actor": ev.actor,
        "action": ev.action,
        "subject_type": ev.subject_type,
        "subject_id": ev.subject_id,
        "data": ev.data,
    }


class UnitOfWork(ReadUnitOfWork):
    """One write transaction: the repositories over a session holding its write locks, and
    the audit log. Services never commit: ``Database.write()`` commits when the block ends.

    ``inline_audit``: chain each event here, under the head (SQLite, where the one writer
    lock already serialises writers); otherwise record it as pending for the appender.
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
        self._head: AuditHead | None = None
        # PostgreSQL: the freeze gate is an advisory lock of its own (``hold_freeze_gate``).
        self._freeze_gate = freeze_gate
        self._freeze_gate_held = freeze_gate_held
        self.recorded_events = 0
        self._unchained: list[AuditEvent] = []

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
        """Append an event to the hash chain inside this transaction (or, on PostgreSQL,
        record it for the appender, which chains it right after this transaction commits)."""
        self.recorded_events += 1
        event = AuditEvent(
            created_at=utcnow(),
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            data=json.loads(json.dumps(data or {}, default=str)),
        )
        if not self._inline_audit:
            self._unchained.append(event)
            return
        if self._head is None:
            self._head = self.session.get_one(AuditHead, 1)
        self._head = chain_event(self.session, self._audit_key, self._head, event)

    def finish(self) -> bool:
        """Just before commit (PostgreSQL): chain this transaction's events if the head is
        free, else leave them pending for the appender. True if some are left pending.

        Taking the head here, at the very end, holds it only for the commit; when another
        transaction holds it, waiting would serialise writers again, so the events go to
        ``audit_pending`` instead and the appender chains them after the commit.
        """
        if not self._unchained:
            return False
        head = self.session.execute(
            select(AuditHead).where(AuditHead.id == 1).with_for_update(skip_locked=True)
        ).scalar_one_or_none()
        if head is None:
            for event in self._unchained:
                self.session.add(PendingAuditEvent(**_pending_fields(event)))
            return True
        # Events committed earlier and still waiting go first: the chain keeps their order.
        head = chain_pending(self.session, self._audit_key, head)
        for event in self._unchained:
            head = chain_event(self.session, self._audit_key, head, event)
        return False


def _pending_fields(event: AuditEvent) -> dict[str, Any]:
    return {
        "created_at": event.created_at,
        "actor": event.actor,
        "action": event.action,
        "subject_type": event.subject_type,
        "subject_id": event.subject_id,
        "data": event.data,
    }


def chain_pending(
    session: Session, key: bytes, head: AuditHead, *, limit: int = 5_000
) -> AuditHead:
    """Move up to ``limit`` committed pending events into the chain, oldest first (the
    caller holds the head row)."""
    pending = list(
        session.scalars(select(PendingAuditEvent).order_by(PendingAuditEvent.id).limit(limit))
    )
    for row in pending:
        head = chain_event(
            session,
            key,
            head,
            AuditEvent(
                created_at=row.created_at,
                actor=row.actor,
                action=row.action,
                subject_type=row.subject_type,
                subject_id=row.subject_id,
                data=row.data,
            ),
        )
        session.delete(row)
    return head


def chain_event(session: Session, key: bytes, head: AuditHead, ev: AuditEvent) -> AuditHead:
    """Give ``ev`` the next sequence number and its hash, add it, and move the head."""
    ev.seq = head.last_seq + 1
    ev.prev_hash = head.last_hash
    ev.hash = audit_digest(key, head.last_hash, audit_fields(ev))
    session.add(ev)
    head.last_seq = ev.seq
    head.last_hash = ev.hash
    head.mac = audit_head_tag(key, ev.seq, ev.hash)
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
        also_lock: Sequence[str] = (),
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
        """
        if self.is_sqlite:
            queue = self._queues.get(SQLITE_WRITER)
        elif freeze:
            queue = self._queues.get(FREEZE_LOCK)
        elif wallet_id is not None:
            queue = self._queues.get(wallet_lock(wallet_id))
        else:
            queue = self._queues.get(min(also_lock) if also_lock else GLOBAL_LOCK)
        left_pending = False
        with (
            queue.hold(urgent=freeze),
            Session(self._write_engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            uow = UnitOfWork(
                session,
                self.audit_key,
                inline_audit=self.is_sqlite,
                freeze_gate=not self.is_sqlite,
                freeze_gate_held=freeze or honour_freeze,
            )
            if not self.is_sqlite:
                self._take_advisory_locks(
                    session, wallet_id, also_lock, freeze=freeze, honour_freeze=honour_freeze
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

    def ping(self) -> None:
        """Raise if the database cannot run a statement (readiness probes)."""
        with self.engine.connect() as connection:
            connection.exec_driver_sql("SELECT 1")

    def dispose(self) -> None:
        self.engine.dispose()
