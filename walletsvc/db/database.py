"""Engine, unit of work and the write lock.

Every state change runs in ``Database.write()``: one transaction that first takes the global
write lock, then changes rows and appends its audit event, and commits both or neither.

Why one global write lock: velocity limits, idempotency keys and the audit hash chain all
need "read the current state, then write" to be atomic. Serialising writers makes that true
on both databases with one mechanism:
  * SQLite: ``BEGIN IMMEDIATE`` takes the database's RESERVED lock at BEGIN, so no other
    writer can interleave between our reads and writes (https://sqlite.org/lang_transaction.html).
  * PostgreSQL: ``SELECT ... FOR UPDATE`` on the single audit_head row; READ COMMITTED gives
    every later statement a snapshot taken after the lock was granted.
Writes here are short (a payout request is a few statements; signing is milliseconds), so a
hot wallet's throughput is far below what one serial writer sustains.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, create_engine, event, insert, select
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import Session
from sqlalchemy.pool import ConnectionPoolEntry

from walletsvc.keys.integrity import canonical_json, encode_message

from .models import AuditEvent, AuditHead, utcnow
from .outbox import (
    EVENT_TYPES,
    PUBLISHED_AUDIT_ACTIONS,
    capture_withdrawal_status_changes,
    outbox_event,
)
from .repositories import ReadUnitOfWork

GENESIS_HASH = "0" * 64


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
    """One write transaction: the repositories over a session holding the write lock, and
    the audit log. Services never commit: ``Database.write()`` commits when the block ends."""

    def __init__(self, session: Session, audit_key: bytes) -> None:
        super().__init__(session)
        self._audit_key = audit_key
        self._head: AuditHead | None = None
        self._head_checked = False
        capture_withdrawal_status_changes(session)

    def lock(self) -> None:
        head = self.session.execute(
            select(AuditHead).where(AuditHead.id == 1).with_for_update()
        ).scalar_one()
        self._head = head

    def audit(
        self,
        actor: str,
        action: str,
        subject_type: str,
        subject_id: str | None,
        data: dict[str, Any] | None = None,
    ) -> AuditEvent:
        """Append an event to the hash chain inside this transaction."""
        head = self._head
        assert head is not None, "audit() outside a locked write transaction"
        if not self._head_checked:
            self._head_checked = True
            self._check_head(head)
        return self._append(head, actor, action, subject_type, subject_id, data)

    def _check_head(self, head: AuditHead) -> None:
        """Refuse to launder a truncated tail. Appending re-tags the head, so a head whose
        tag fails (the last events deleted and the head pointed at the new last one) would
        verify again after the next write. The finding goes into the chain first, where
        ``audit verify`` keeps reporting it and the risk monitor freezes on it. Once per
        write transaction: one tag and one lookup by primary key."""
        if not head.last_seq:
            return
        reason = None
        if not hmac.compare_digest(
            head.mac or "", audit_head_tag(self._audit_key, head.last_seq, head.last_hash)
        ):
            reason = (
                "the audit head fails its integrity tag"
                " (the last events removed, the head rewritten?)"
            )
        else:
            last = self.session.get(AuditEvent, head.last_seq)
            if last is None or last.hash != head.last_hash:
                reason = "the audit head does not match the last event (events removed?)"
        if reason is not None:
            data = {"reason": reason, "head_seq": head.last_seq}
            self._append(head, "system", INTEGRITY_FAILURE, AUDIT_HEAD_SUBJECT, None, data)

    def _append(
        self,
        head: AuditHead,
        actor: str,
        action: str,
        subject_type: str,
        subject_id: str | None,
        data: dict[str, Any] | None,
    ) -> AuditEvent:
        ev = AuditEvent(
            seq=head.last_seq + 1,
            created_at=utcnow(),
            actor=actor,
            action=action,
            subject_type=subject_type,
            subject_id=subject_id,
            data=json.loads(json.dumps(data or {}, default=str)),
            prev_hash=head.last_hash,
        )
        ev.hash = audit_digest(self._audit_key, head.last_hash, audit_fields(ev))
        self.session.add(ev)
        head.last_seq = ev.seq
        head.last_hash = ev.hash
        head.mac = audit_head_tag(self._audit_key, ev.seq, ev.hash)
        if action in PUBLISHED_AUDIT_ACTIONS:
            self.emit(
                action, {"subject_type": subject_type, "subject_id": subject_id, "data": ev.data}
            )
        return ev

    def audit_many(
        self,
        actor: str,
        action: str,
        subject_type: str,
        events: Sequence[tuple[str | None, dict[str, Any]]],
    ) -> None:
        """Append one event per (subject_id, data), in order, with one multi-row INSERT.

        The chain, hashes and head are exactly those of calling ``audit`` for each (``audit
        verify`` cannot tell them apart); a payout round's thousands of events skip building
        an ORM object each.
        """
        head = self._head
        assert head is not None, "audit_many() outside a locked write transaction"
        rows = []
        seq, prev_hash = head.last_seq, head.last_hash
        for subject_id, data in events:
            seq += 1
            created_at = utcnow()
            row: dict[str, Any] = {
                "seq": seq,
                "actor": actor,
                "action": action,
                "subject_type": subject_type,
                "subject_id": subject_id,
                "data": json.loads(json.dumps(data, default=str)),
            }
            digest = audit_digest(
                self._audit_key, prev_hash, {**row, "created_at": created_at.isoformat()}
            )
            rows.append({**row, "created_at": created_at, "prev_hash": prev_hash, "hash": digest})
            prev_hash = digest
        if not rows:
            return
        self.session.execute(insert(AuditEvent), rows)
        head.last_seq, head.last_hash = seq, prev_hash
        head.mac = audit_head_tag(self._audit_key, seq, prev_hash)
        if action in PUBLISHED_AUDIT_ACTIONS:
            for row in rows:
                self.emit(
                    action,
                    {
                        "subject_type": subject_type,
                        "subject_id": row["subject_id"],
                        "data": row["data"],
                    },
                )

    def emit(self, event_type: str, payload: dict[str, Any]) -> None:
        """Publish an event to webhooks, committed (or not) with this transaction.

        Delivery happens later, by the dispatcher (walletsvc.webhooks.dispatcher): this never
        waits on a receiver. ``payload`` must be JSON and hold no secrets."""
        if event_type not in EVENT_TYPES:
            raise ValueError(f"unknown webhook event type {event_type!r} (walletsvc.db.outbox)")
        self.session.add(outbox_event(event_type, json.loads(json.dumps(payload, default=str))))


class Database:
    def __init__(self, url: str, *, audit_key: bytes) -> None:
        self.url = url
        self.engine = make_engine(url)
        self._write_engine = self.engine.execution_options(walletsvc_write=True)
        self.audit_key = audit_key

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @contextmanager
    def write(self) -> Iterator[UnitOfWork]:
        """A locked write transaction; commits on success, rolls back on any exception."""
        with (
            Session(self._write_engine, expire_on_commit=False) as session,
            session.begin(),
        ):
            uow = UnitOfWork(session, self.audit_key)
            uow.lock()
            yield uow

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
