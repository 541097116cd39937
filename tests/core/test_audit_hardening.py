"""The audit log holds against a flood of refusals and against its own database role (security
report, items 3, 4 and 12)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator

import pytest
import sqlalchemy as sa
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core import audit
from portal.core.audit import AuditEvent, RefusalTally
from portal.core.cli import app_role_grants
from portal.core.models import utcnow
from tests.databases import POSTGRES_ADMIN_URL
from tests.factories import make_user
from tests.support.app import login


def _count(db: Session, action: str) -> int:
    return (
        db.scalar(
            sa.select(sa.func.count()).select_from(AuditEvent).where(AuditEvent.action == action)
        )
        or 0
    )


def _refused_sql(db: Session, statement: str) -> None:
    nested = db.begin_nested()
    with pytest.raises(sa.exc.DBAPIError, match="append-only"):
        db.execute(sa.text(statement))
    nested.rollback()


def test_rewriting_an_event_by_inserting_over_it_is_refused(db: Session) -> None:
    """SQLite's ``INSERT OR REPLACE`` deletes the old row without firing DELETE triggers;
    PostgreSQL's upsert is an UPDATE. Both are refused."""
    ev = audit.record(db, "institution.approve", actor=None, reason="genuine")
    upsert = {
        "sqlite": "INSERT OR REPLACE INTO audit_events (id, occurred_at, action, channel, details) "
        f"VALUES ({ev.id}, '2026-01-01 00:00:00', 'forged', 'web', '{{}}')",
        "postgresql": "INSERT INTO audit_events (id, occurred_at, action, channel, details) "
        f"VALUES ({ev.id}, now(), 'forged', 'web', '{{}}') "
        "ON CONFLICT (id) DO UPDATE SET action = 'forged'",
    }[db.get_bind().dialect.name]
    _refused_sql(db, upsert)
    db.expire_all()
    assert db.get(AuditEvent, ev.id).action == "institution.approve"  # type: ignore[union-attr]


def test_emptying_the_log_at_once_is_refused(db: Session) -> None:
    audit.record(db, "institution.approve", actor=None)
    statement = {
        "sqlite": "DELETE FROM audit_events",
        "postgresql": "TRUNCATE audit_events CASCADE",
    }
    _refused_sql(db, statement[db.get_bind().dialect.name])
    assert _count(db, "institution.approve") == 1


def test_retention_deletes_old_refusals_only_and_is_itself_audited(app: Flask, db: Session) -> None:
    old = utcnow() - dt.timedelta(days=400)
    for action in ("permission.denied", "institution.approve"):
        db.add(AuditEvent(action=action, occurred_at=old, details={}))
    db.add(AuditEvent(action="permission.denied", details={}))  # recent: kept
    db.flush()
    # A change, even an old one, cannot be deleted by any statement.
    _refused_sql(db, "DELETE FROM audit_events WHERE action = 'institution.approve'")

    result = app.test_cli_runner().invoke(
        args=["audit", "prune-refusals", "--older-than-days", "180"]
    )
    assert result.exit_code == 0, result.output
    assert "Deleted 1 refused-request events" in result.output
    db.expire_all()
    assert _count(db, "permission.denied") == 1
    assert _count(db, "institution.approve") == 1
    (pruned,) = db.scalars(sa.select(AuditEvent).where(AuditEvent.action == "audit.prune_refusals"))
    assert pruned.details == {"older_than_days": 180, "deleted": 1}
    assert pruned.channel == "cli"


def test_big_details_are_capped(db: Session) -> None:
    ev = audit.record(db, "test.big", actor=None, path="/x" * 5000, note="fine")
    assert len(ev.details["path"]) <= audit.MAX_DETAIL_TEXT + 1
    assert ev.details["truncated"] is True and ev.details["note"] == "fine"
    many = audit.record(db, "test.many", actor=None, **{f"k{i}": "v" * 400 for i in range(60)})
    assert many.details["truncated"] is True and len(many.details["keys"]) == 50


@pytest.fixture
def refusal_limit(app: Flask) -> Iterator[int]:
    """A limit of 20 refusals in one window that no run of the test straddles (windows are aligned
    to multiples of their length: a minute-long one may turn over between two requests on a
    loaded machine, and the count would start again)."""
    before = app.config["REFUSAL_LIMIT"], app.config["REFUSAL_WINDOW_SECONDS"]
    app.config["REFUSAL_LIMIT"], app.config["REFUSAL_WINDOW_SECONDS"] = 20, 10**9
    yield 20
    app.config["REFUSAL_LIMIT"], app.config["REFUSAL_WINDOW_SECONDS"] = before


def test_a_flood_of_refusals_adds_one_event_per_page_and_then_is_slowed_down(
    client: FlaskClient, db: Session, refusal_limit: int
) -> None:
    """The report: 300 refused requests in 5 s added 301 rows. Now one event per person, page and
    minute carries the count, and past the limit the answer is 429 (still counted)."""
    researcher = make_user(db, Role.RESEARCHER)
    login(client, researcher)
    statuses = [client.get("/admin/audit").status_code for _ in range(refusal_limit + 10)]
    statuses += [client.get("/auth/admin/users").status_code]
    assert statuses[:refusal_limit] == [403] * refusal_limit
    assert set(statuses[refusal_limit:]) == {429}
    db.expire_all()
    events = db.scalars(
        sa.select(AuditEvent).where(
            AuditEvent.action == "permission.denied", AuditEvent.actor_id == researcher.id
        )
    ).all()
    assert sorted(e.details["path"] for e in events) == ["/admin/audit", "/auth/admin/users"]
    tally = db.scalars(
        sa.select(RefusalTally).where(
            RefusalTally.who == f"user:{researcher.id}", RefusalTally.path == "/admin/audit"
        )
    ).one()
    assert tally.count == refusal_limit + 10
    assert tally.event_id in {e.id for e in events}
    login(client, make_user(db, Role.ADMIN))
    assert f"\N{MULTIPLICATION SIGN} {refusal_limit + 10}" in client.get("/admin/audit").get_data(
        as_text=True
    )


def test_the_app_role_can_only_read_and_append_the_audit_log(app: Flask, db: Session) -> None:
    """PostgreSQL: with the owner role running migrations and the app role granted by
    ``flask audit grant-app-role``, the app role cannot UPDATE, DELETE, TRUNCATE, disable or drop.
    SQLite has no roles: the command refuses to run there, and the triggers above hold."""
    if db.get_bind().dialect.name == "sqlite":
        result = app.test_cli_runner().invoke(args=["audit", "grant-app-role", "portal_app"])
        assert result.exit_code != 0 and "PostgreSQL" in result.output
        return
    suffix = uuid.uuid4().hex[:8]
    owner, app_role, dbname = f"atom_owner_{suffix}", f"atom_app_{suffix}", f"atom_roles_{suffix}"
    admin = sa.create_engine(POSTGRES_ADMIN_URL, isolation_level="AUTOCOMMIT")
    with admin.connect() as c:
        c.execute(sa.text(f"CREATE ROLE {owner} LOGIN"))
        c.execute(sa.text(f"CREATE ROLE {app_role} LOGIN"))
        c.execute(sa.text(f'CREATE DATABASE "{dbname}" OWNER {owner}'))
    url = sa.make_url(POSTGRES_ADMIN_URL).set(database=dbname)
    try:
        as_owner = sa.create_engine(url.set(username=owner))
        with as_owner.begin() as c:
            AuditEvent.metadata.create_all(c)
            for statement in app_role_grants(app_role):
                c.execute(sa.text(statement))
            c.execute(
                sa.text(
                    "INSERT INTO audit_events (occurred_at, action, channel, details) "
                    "VALUES (now(), 'x', 'web', '{}')"
                )
            )
        as_owner.dispose()
        as_app = sa.create_engine(url.set(username=app_role))
        with as_app.begin() as c:  # what the app does: read and append
            c.execute(
                sa.text(
                    "INSERT INTO audit_events (occurred_at, action, channel, details) "
                    "VALUES (now(), 'y', 'web', '{}')"
                )
            )
            assert c.scalar(sa.text("SELECT count(*) FROM audit_events")) == 2
        for statement in [
            "UPDATE audit_events SET action = 'tampered'",
            "DELETE FROM audit_events",
            "TRUNCATE audit_events CASCADE",
            "ALTER TABLE audit_events DISABLE TRIGGER audit_events_append_only",
            "DROP TRIGGER audit_events_append_only ON audit_events",
            "DROP TABLE audit_events CASCADE",
        ]:
            with (
                as_app.connect() as c,
                pytest.raises(sa.exc.ProgrammingError, match=r"denied|owner"),
            ):
                c.execute(sa.text(statement))
        with as_app.begin() as c:
            assert c.scalar(sa.text("SELECT count(*) FROM audit_events")) == 2
        as_app.dispose()
    finally:
        with admin.connect() as c:
            c.execute(sa.text(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)'))
            c.execute(sa.text(f"DROP ROLE IF EXISTS {app_role}"))
            c.execute(sa.text(f"DROP ROLE IF EXISTS {owner}"))
        admin.dispose()
