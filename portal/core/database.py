"""Engine setup: real transactions on SQLite, and a write-intent switch for ``BEGIN IMMEDIATE``.

pysqlite by default opens transactions lazily and lets SQLAlchemy's ``BEGIN`` mean nothing, which
breaks SAVEPOINTs and lets two writers read the same state before either writes. Following
SQLAlchemy's SQLite recipe, the driver's own transaction handling is switched off and the portal
emits ``BEGIN`` itself: ``BEGIN IMMEDIATE`` (take the write lock now) unless the current context is
marked read-only, which the web layer does for GET and HEAD requests.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import Engine, event
from sqlalchemy.engine import Connection

_read_only: contextvars.ContextVar[bool] = contextvars.ContextVar("read_only", default=False)


def is_read_only() -> bool:
    """Whether this context only reads (a GET page): nothing it reads changes under it."""
    return _read_only.get()


def set_read_only(value: bool) -> None:
    """Mark the rest of this context as reading only (SQLite then uses a deferred ``BEGIN``)."""
    _read_only.set(value)


@contextmanager
def write_intent() -> Iterator[None]:
    """Within this block, SQLite transactions take the write lock as they begin."""
    token = _read_only.set(False)
    try:
        yield
    finally:
        _read_only.reset(token)


@contextmanager
def own_transaction(session: Any) -> Iterator[None]:
    """Run a short write in a transaction of its own, committed when the block ends.

    What the request read so far is let go first: on SQLite a transaction that has read cannot
    start writing once another connection committed (SQLITE_BUSY_SNAPSHOT, which no busy timeout
    retries), so a GET that must write (a refusal's audit event, a session's last-seen time) does
    it in a new transaction that takes the write lock as it begins and waits its turn for it.
    """
    session.rollback()
    with write_intent():
        try:
            yield
            session.commit()
        except BaseException:
            session.rollback()
            raise


#: The SQL statements of the current request so far (None outside a counted request).
_statements: contextvars.ContextVar[list[int] | None] = contextvars.ContextVar(
    "sql_statements", default=None
)


def count_statements() -> None:
    """Start counting the SQL statements this context (a request) runs."""
    _statements.set([0])


def statements_counted() -> int | None:
    """How many SQL statements ran since ``count_statements()`` (None if it was not called)."""
    counter = _statements.get()
    return None if counter is None else counter[0]


def configure_engine(engine: Engine) -> None:
    """Count each request's statements on ``engine``; on SQLite, install the transaction and
    pragma handling."""

    @event.listens_for(engine, "before_cursor_execute")
    def _count(*args: Any) -> None:
        counter = _statements.get()
        if counter is not None:
            counter[0] += 1

    if engine.dialect.name != "sqlite":
        return

    @event.listens_for(engine, "connect")
    def _connect(dbapi_connection: Any, connection_record: Any) -> None:
        dbapi_connection.isolation_level = None  # we emit BEGIN ourselves
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.execute("PRAGMA busy_timeout = 10000")
        if engine.url.database not in (None, "", ":memory:"):
            cursor.execute("PRAGMA journal_mode = WAL")
            cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _begin(conn: Connection) -> None:
        conn.exec_driver_sql("BEGIN" if _read_only.get() else "BEGIN IMMEDIATE")
