"""SQLite runs with real transactions; timestamps come back timezone-aware on both databases."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest
import sqlalchemy as sa
from sqlalchemy.orm import Session

from portal.core.database import configure_engine, set_read_only
from portal.core.models import utcnow
from tests.factories import make_institution


@pytest.fixture
def sqlite_engine(tmp_path: Path) -> sa.Engine:
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'tx.sqlite3'}")
    configure_engine(engine)
    with engine.begin() as c:
        c.exec_driver_sql("CREATE TABLE t (x INTEGER)")
    return engine


def test_sqlite_has_foreign_keys_and_wal(sqlite_engine: sa.Engine) -> None:
    with sqlite_engine.connect() as c:
        assert c.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
        assert c.exec_driver_sql("PRAGMA journal_mode").scalar() == "wal"


def test_sqlite_write_transactions_take_the_lock_when_they_begin(sqlite_engine: sa.Engine) -> None:
    first = sqlite_engine.connect()
    first.begin()  # BEGIN IMMEDIATE: holds the write lock before any statement
    second = sqlite_engine.connect()
    # Straight to the driver: through SQLAlchemy the PRAGMA would itself begin a transaction.
    second.connection.driver_connection.execute("PRAGMA busy_timeout = 50")  # type: ignore[union-attr]
    with pytest.raises(sa.exc.OperationalError, match="locked"):
        second.begin()
    first.rollback()
    second.begin()  # free again
    second.rollback()
    first.close()
    second.close()


def test_sqlite_read_only_context_does_not_block_writers(sqlite_engine: sa.Engine) -> None:
    set_read_only(True)
    try:
        reader = sqlite_engine.connect()
        reader.begin()
        reader.exec_driver_sql("SELECT count(*) FROM t").scalar()
    finally:
        set_read_only(False)
    with sqlite_engine.begin() as writer:
        writer.exec_driver_sql("INSERT INTO t VALUES (1)")
    reader.rollback()
    reader.close()


def test_sqlite_savepoints_roll_back_only_their_part(sqlite_engine: sa.Engine) -> None:
    with sqlite_engine.begin() as c:
        c.exec_driver_sql("INSERT INTO t VALUES (1)")
        sp = c.begin_nested()
        c.exec_driver_sql("INSERT INTO t VALUES (2)")
        sp.rollback()
    with sqlite_engine.connect() as c:
        assert c.exec_driver_sql("SELECT x FROM t").scalars().all() == [1]


def test_timestamps_are_timezone_aware_utc(db: Session) -> None:
    inst = make_institution(db)
    db.expire_all()
    assert inst.created_at.tzinfo is not None
    assert abs(inst.state_changed_at - utcnow()) < dt.timedelta(minutes=1)


def test_naive_datetimes_are_refused(db: Session) -> None:
    inst = make_institution(db)
    inst.state_changed_at = dt.datetime(2026, 1, 1)
    with pytest.raises(sa.exc.StatementError, match="naive datetime"):
        db.flush()
