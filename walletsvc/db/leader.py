"""The background worker's leader lease: several service processes on one database, exactly
one of them running the background passes (scanner, worker, sweeps) at a time.

* PostgreSQL: a session-level advisory lock on a connection this process keeps open. If the
  process dies (even ``kill -9``) its connection closes and the server releases the lock at
  once, so another process takes over on its next pass. Every pass checks the connection; a
  leader that lost it (network partition, server restart) stops being leader.
* SQLite (one host): a row in ``worker_lease`` with an expiry the holder renews every pass;
  another process takes over once it has expired, so takeover takes up to ``ttl_s``.

Safety does not rest on the lease: two workers at once (a leader paused past its lease)
still never pay anything twice, because signing claims payouts under the wallet's write lock
and only committed `signed` rows are broadcast (walletsvc.payouts.worker). The lease keeps
the work in one place.
"""

from __future__ import annotations

import logging
import os
import socket
import uuid
from datetime import timedelta

from sqlalchemy import Connection, delete, select, text
from sqlalchemy.exc import DBAPIError

from .database import Database
from .locks import advisory_key
from .models import WorkerLease, utcnow

log = logging.getLogger(__name__)
LEASE_NAME = "worker"


def holder_name() -> str:
    """Who this process is, in the lease and in the audit log: host, pid and a nonce."""
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"


class LeaderLease:
    def __init__(self, db: Database, *, ttl_s: float = 15.0, holder: str | None = None) -> None:
        self.db = db
        self.ttl = timedelta(seconds=ttl_s)
        self.holder = holder or holder_name()
        self._connection: Connection | None = None
        self.held = False

    def acquire(self) -> bool:
        """Take or keep the lease; True while this process is the leader."""
        was_held = self.held
        try:
            self.held = self._acquire_sqlite() if self.db.is_sqlite else self._acquire_postgres()
        except DBAPIError as exc:
            log.warning("leader lease check failed: %s", type(exc).__name__)
            self._drop_connection()
            self.held = False
        if self.held and not was_held:
            log.info("worker leader lease taken")  # also an audit event (Runtime._lead)
        elif was_held and not self.held:
            log.warning("worker leader lease lost")
        return self.held

    def release(self) -> None:
        if self.db.is_sqlite:
            if self.held:
                with self.db.write() as uow:
                    uow.session.execute(
                        delete(WorkerLease).where(
                            WorkerLease.name == LEASE_NAME, WorkerLease.holder == self.holder
                        )
                    )
        else:
            self._drop_connection()
        self.held = False

    def _acquire_postgres(self) -> bool:
        if self._connection is None:
            self._connection = self.db.engine.connect()
        if self.held:
            # Still ours as long as the session that holds it is alive.
            self._connection.execute(text("SELECT 1"))
            self._connection.commit()
            return True
        got = bool(
            self._connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": advisory_key("leader")}
            ).scalar_one()
        )
        self._connection.commit()  # the lock is the session's; the transaction can end
        return got

    def _acquire_sqlite(self) -> bool:
        now = utcnow()
        with self.db.write() as uow:
            row = uow.session.scalar(select(WorkerLease).where(WorkerLease.name == LEASE_NAME))
            if row is None:
                uow.session.add(
                    WorkerLease(name=LEASE_NAME, holder=self.holder, expires_at=now + self.ttl)
                )
                return True
            if row.holder != self.holder and row.expires_at > now:
                return False
            row.holder = self.holder
            row.expires_at = now + self.ttl
            return True

    def _drop_connection(self) -> None:
        if self._connection is not None:
            try:
                # Invalidated, not returned to the pool: ending the server session is what
                # releases its advisory lock.
                self._connection.invalidate()
                self._connection.close()
            except DBAPIError:
                pass
            self._connection = None
