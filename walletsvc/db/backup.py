"""Database dumps for ``walletsvc backup`` / ``walletsvc restore`` (the database side only;
walletsvc.bootstrap.backup adds the key files and the manifest).

Three formats, each restored only onto an empty database:
  * ``sqlite``: SQLite's online backup API (``sqlite3.Connection.backup``), a consistent copy
    of a live database page by page, never a file copy of a database being written;
  * ``pg_dump``: PostgreSQL's own ``pg_dump --format=custom``, restored with ``pg_restore``
    (the tools must be on PATH and match the server's major version);
  * ``json``: a logical export of every table of the schema, in foreign-key order, that any
    of our databases can load after ``walletsvc migrate`` (the fallback without pg_dump,
    and a way to move between SQLite and PostgreSQL). Rows are written as stored: the row
    tags and the audit chain verify after a restore because nothing is re-encoded.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import sqlite3
import subprocess
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import sqlalchemy as sa

from walletsvc.db.migrate import upgrade
from walletsvc.db.registry import metadata
from walletsvc.domain.errors import Conflict, DependencyUnavailable, InvalidInput

Progress = Callable[[str], None]
SQLITE_FILE = "walletsvc.db"
PG_DUMP_FILE = "database.pgdump"
JSON_FILE = "database.json"
_PAGES_PER_STEP = 256  # SQLite backup: pages copied between progress reports


def _quiet(_: str) -> None:
    return None


def sqlite_path(url: str) -> Path | None:
    parsed = sa.engine.make_url(url)
    if parsed.get_backend_name() != "sqlite" or not parsed.database:
        return None
    return Path(parsed.database)


def libpq_target(url: str) -> tuple[str, dict[str, str]]:
    """The SQLAlchemy URL as libpq (pg_dump, pg_restore) takes it: the URL without its
    password (a command line is visible to every local user), and the password as
    ``PGPASSWORD`` for the child's environment only."""
    parsed = sa.engine.make_url(url).set(drivername="postgresql")
    env = {"PGPASSWORD": parsed.password} if parsed.password else {}
    return parsed.set(password=None).render_as_string(hide_password=False), env


def schema_revision(url: str) -> str | None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            if not sa.inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
    finally:
        engine.dispose()


def dump(url: str, directory: Path, *, fmt: str | None, progress: Progress = _quiet) -> str:
    """Write the database into ``directory``; returns the file name written."""
    backend = sa.engine.make_url(url).get_backend_name()
    fmt = fmt or ("sqlite" if backend == "sqlite" else "pg_dump")
    if fmt == "pg_dump" and shutil.which("pg_dump") is None:
        progress("pg_dump is not on PATH: writing a logical JSON export instead")
        fmt = "json"
    if fmt == "sqlite":
        return _dump_sqlite(url, directory, progress)
    if fmt == "pg_dump":
        return _dump_pg(url, directory, progress)
    if fmt == "json":
        return _dump_json(url, directory, progress)
    raise InvalidInput("format must be sqlite, pg_dump or json", field="format")


def load(url: str, directory: Path, file_name: str, *, progress: Progress = _quiet) -> None:
    """Restore ``directory/file_name`` onto the (empty) database at ``url``."""
    _require_empty(url)
    source = directory / file_name
    if file_name == SQLITE_FILE:
        _load_sqlite(url, source, progress)
    elif file_name == PG_DUMP_FILE:
        _load_pg(url, source, progress)
    elif file_name == JSON_FILE:
        _load_json(url, source, progress)
    else:
        raise InvalidInput(f"unknown database file {file_name!r}", field="backup")


def _require_empty(url: str) -> None:
    engine = sa.create_engine(url)
    try:
        with engine.connect() as conn:
            tables = set(sa.inspect(conn).get_table_names())
            if "wallets" in tables and conn.execute(sa.text("SELECT 1 FROM wallets")).first():
                raise Conflict(
                    "the target database already holds wallets: restore onto an empty one",
                    field="database_url",
                )
    finally:
        engine.dispose()


# --- SQLite -----------------------------------------------------------------------------------


def _dump_sqlite(url: str, directory: Path, progress: Progress) -> str:
    path = sqlite_path(url)
    if path is None:
        raise InvalidInput("the sqlite format needs a SQLite database", field="format")
    target = directory / SQLITE_FILE

    def report(status: int, remaining: int, total: int) -> None:
        progress(f"database: {total - remaining} of {total} pages copied")

    with sqlite3.connect(path) as source, sqlite3.connect(target) as copy:
        source.backup(copy, pages=_PAGES_PER_STEP, progress=report)
    return SQLITE_FILE


def _load_sqlite(url: str, source: Path, progress: Progress) -> None:
    path = sqlite_path(url)
    if path is None:
        raise InvalidInput(
            "a SQLite backup restores onto SQLite; use --format json to move databases",
            field="database_url",
        )
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(source) as backup, sqlite3.connect(path) as target:
        backup.backup(target)
    progress(f"database: restored into {path}")


# --- PostgreSQL ---------------------------------------------------------------------------


def _dump_pg(url: str, directory: Path, progress: Progress) -> str:
    target = directory / PG_DUMP_FILE
    progress("database: pg_dump --format=custom")
    _run(["pg_dump", "--format=custom", "--no-owner", "--no-acl", "--file", str(target)], url)
    return PG_DUMP_FILE


def _load_pg(url: str, source: Path, progress: Progress) -> None:
    if sqlite_path(url) is not None:
        raise InvalidInput("a pg_dump backup restores onto PostgreSQL", field="database_url")
    progress("database: pg_restore")
    _run(["pg_restore", "--no-owner", "--no-acl", "--exit-on-error", str(source)], url)


def _run(command: list[str], url: str) -> None:
    target, secret = libpq_target(url)
    try:
        # A fixed program and arguments we build, no shell.
        done = subprocess.run(  # noqa: S603
            [*command, "--dbname", target],
            env={**os.environ, **secret},
            capture_output=True,
            text=True,
            check=False,
            timeout=3600,
        )
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise DependencyUnavailable(f"{command[0]} did not run: {type(exc).__name__}") from None
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["no message"])[-1]
        raise DependencyUnavailable(f"{command[0]} failed: {last}")


# --- Logical JSON -------------------------------------------------------------------------


def _encode(value: Any) -> Any:
    if isinstance(value, datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    return value


def _decode(value: Any) -> Any:
    if isinstance(value, dict) and len(value) == 1:
        if "$datetime" in value:
            return datetime.fromisoformat(value["$datetime"])
        if "$bytes" in value:
            return base64.b64decode(value["$bytes"])
    return value


# Tables derived from others by database triggers (migration 0018): not exported, and
# rebuilt by those triggers as the rows they derive from are loaded.
DERIVED_TABLES = frozenset({"velocity_buckets"})


def _dump_json(url: str, directory: Path, progress: Progress) -> str:
    engine = sa.create_engine(url)
    tables: dict[str, list[dict[str, Any]]] = {}
    try:
        with engine.connect() as conn:
            for table in metadata.sorted_tables:
                if table.name in DERIVED_TABLES:
                    continue
                rows = conn.execute(sa.select(table)).mappings().all()
                tables[table.name] = [{k: _encode(v) for k, v in r.items()} for r in rows]
                progress(f"database: {table.name}: {len(rows)} rows")
    finally:
        engine.dispose()
    payload = {"format": "walletsvc-json-1", "tables": tables}
    (directory / JSON_FILE).write_text(json.dumps(payload, sort_keys=True))
    return JSON_FILE


def _load_json(url: str, source: Path, progress: Progress) -> None:
    payload = json.loads(source.read_text())
    if payload.get("format") != "walletsvc-json-1":
        raise InvalidInput("not a walletsvc JSON export", field="backup")
    upgrade(url)  # the schema first; the rows then go in foreign-key order
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            for table in reversed(metadata.sorted_tables):
                conn.execute(table.delete())  # rows the migrations seeded (the audit head)
            for table in metadata.sorted_tables:
                if table.name in DERIVED_TABLES:
                    continue  # the triggers fill it from the withdrawals loaded here
                rows = [
                    {k: _decode(v) for k, v in row.items()}
                    for row in payload["tables"].get(table.name, [])
                ]
                if rows:
                    conn.execute(table.insert(), rows)
                progress(f"database: {table.name}: {len(rows)} rows")
            if conn.dialect.name == "postgresql":
                _advance_sequences(conn)
    finally:
        engine.dispose()


def _advance_sequences(conn: sa.Connection) -> None:
    """PostgreSQL: rows inserted with their own ids leave each table's sequence where it
    was, so the next insert would take an id the restore already used (the outbox's first
    event after a restore). Move every sequence past its table's largest id."""
    for table in metadata.sorted_tables:
        column = table.autoincrement_column
        if column is None:
            continue
        largest = sa.func.max(column)
        conn.execute(
            sa.select(
                sa.func.setval(
                    sa.func.pg_get_serial_sequence(table.name, column.name),
                    sa.func.coalesce(largest, 1),
                    largest.is_not(None),
                )
            ).select_from(table)
        )
