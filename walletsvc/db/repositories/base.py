"""The base repository: typed access to one model inside a unit of work's session.

Every query of the service lives in a repository method; feature packages ask the
repositories their unit of work exposes (``uow.withdrawals.get(...)``) and never build SQL.
Locking is explicit in the method, as in polar's ``kit/repository/base.py``: a read that
must not change under the caller takes ``for_update=True`` (``SELECT ... FOR UPDATE`` on
PostgreSQL; SQLite has no row locks, but every write transaction already holds the
database's RESERVED lock from ``BEGIN IMMEDIATE``, see walletsvc.db.database).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Any, ClassVar, Generic, TypeVar

from sqlalchemy import insert
from sqlalchemy.orm import Session

from walletsvc.db.models import Base

M = TypeVar("M", bound=Base)
# Bound parameters per IN list: far below SQLite's limit (32,766) and PostgreSQL's (65,535),
# and large enough that a 5,000-payout round needs a handful of statements.
IN_CHUNK = 1_000


def in_chunks(values: Sequence[str]) -> Iterator[list[str]]:
    """The distinct ``values``, sorted, in lists of at most ``IN_CHUNK`` for ``IN (...)``."""
    unique = sorted(set(values))
    for start in range(0, len(unique), IN_CHUNK):
        yield unique[start : start + IN_CHUNK]


class Repository(Generic[M]):
    """Rows of one model; subclasses add the queries their area needs."""

    model: ClassVar[type[Any]]

    def __init__(self, session: Session) -> None:
        self.session = session

    def get(self, row_id: Any, *, for_update: bool = False) -> M | None:
        row: M | None = self.session.get(self.model, row_id, with_for_update=for_update)
        return row

    def add(self, row: M, *, flush: bool = False) -> M:
        """Stage a new row; ``flush=True`` sends it now (ids, unique constraints)."""
        self.session.add(row)
        if flush:
            self.session.flush()
        return row

    def add_many(self, rows: Sequence[dict[str, Any]]) -> None:
        """Insert new rows, given as column values (every key in every row, ids included),
        in one multi-row statement: a block's coins, a round's payouts or an intake batch's
        payouts build no ORM object each."""
        if rows:
            self.session.execute(insert(self.model), list(rows))

    def flush(self) -> None:
        self.session.flush()
