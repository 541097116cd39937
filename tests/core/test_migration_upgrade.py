"""A database in use survives the migrations: populated, it goes down every migration and back up
to head, on SQLite and PostgreSQL, and keeps its rows, its schema and its append-only audit log.

``test_migrations.py`` builds the schema from nothing; here the database holds data in every
table at every revision it passes through. It starts at head with the demo program
(``portal/dev/demo.py``) plus a row in each table the demo leaves empty, then goes down one
migration at a time to the initial schema. At each revision reached:

- every table there has rows, and as many as before, except what ``REWRITTEN`` lists (the tables
  a downgrade drops go with their rows, by nature, as do the columns it drops);
- the schema (tables, columns, indexes, constraints, triggers) is exactly the one ``upgrade`` builds
  from nothing to that revision: a downgrade restores what was there, the audit triggers included;
- the audit log refuses an UPDATE;
- the migration just undone is applied again and undone again: each upgrade step runs once on a
  database with data in every table that exists at its start.

Before undoing ``RENEWALS`` it checks that the one downgrade that cannot keep its data refuses
(clearly, with nothing changed) while a renewal exists. Last, the initial schema, all of whose
tables have rows, is upgraded to head in one go: the rows are all there, the schema matches the
models, the audit log is append-only, SQLite still enforces foreign keys, and the app serves pages
to logged-in users.

On SQLite this is what found that batch mode, which rebuilds a table by dropping it, cascaded
deletes into the tables referring to it (an upgrade emptied ``usage_records``) or was refused, as
long as the migrations ran with foreign keys enforced (``portal/migrations/env.py``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from flask import Flask, current_app
from flask_migrate import downgrade, upgrade

from portal import create_app
from portal.auth.models import Identity, OAuthLoginState, User
from portal.auth.services import start_session
from portal.core import audit
from portal.core.models import AnySession, utcnow
from portal.dev.demo import load_if_empty
from portal.extensions import db
from portal.notifications.kinds import optional_kinds
from portal.notifications.models import Delivery, DeliveryAttempt, OutboxMessage
from portal.notifications.services import set_preferences
from portal.proposals.models import Call, CommitteeMember, Proposal
from portal.reviews.models import ConflictWaiver
from tests.databases import temporary_database
from tests.support.app import TEST_CONFIG, login

#: Rows a downgrade deletes from a table it keeps, because the older schema has no place for them:
#: {revision undone: {table: the WHERE clause, at head, of the rows it deletes}}. Every other
#: table a downgrade keeps keeps all its rows (rows in states an older schema lacks are mapped to
#: its nearest state instead: see the downgrades of 2ca0cb2b2eef and 93d0de2b9891).
REWRITTEN = {
    # Storage operators' tokens: the older schema knows resource operators' tokens only.
    "d19c36786030": {"api_tokens": "scope = 'dataset_operator'"},
}

#: The migration whose downgrade is refused while an allocation renews another (see its docstring).
RENEWALS = "cee18846968f"

#: Pages opened on the upgraded database, by whom (the demo's login names).
PAGES = [
    ("officer", "/dashboard"),
    ("officer", "/institutions/"),
    ("officer", "/proposals/"),
    ("officer", "/allocations/"),
    ("admin", "/admin/audit"),
    ("admin", "/auth/admin/users"),
]


def _row_counts(conn: sa.Connection) -> dict[str, int]:
    return {
        name: conn.execute(sa.text(f'SELECT count(*) FROM "{name}"')).scalar_one()
        for name in sa.inspect(conn).get_table_names()
        if name != "alembic_version"
    }


def _schema(conn: sa.Connection) -> dict[str, Any]:
    """Everything about the schema a migration makes, in a form two databases can be compared by:
    per table its columns, indexes (with a partial index's WHERE), unique, foreign-key and CHECK
    constraints; and the database's triggers (with, on PostgreSQL, their functions)."""
    insp = sa.inspect(conn)

    def by_table(multi: dict[tuple[str | None, str], list[Any]]) -> dict[str, list[Any]]:
        return {table: items for (_, table), items in multi.items()}

    columns = by_table(insp.get_multi_columns())
    indexes = by_table(insp.get_multi_indexes())
    uniques = by_table(insp.get_multi_unique_constraints())
    fks = by_table(insp.get_multi_foreign_keys())
    checks = by_table(insp.get_multi_check_constraints())
    tables: dict[str, Any] = {}
    for table in columns:
        tables[table] = {
            "columns": {
                c["name"]: (str(c["type"]), c["nullable"], c.get("default")) for c in columns[table]
            },
            "indexes": {
                i["name"]: (
                    tuple(i["column_names"]),
                    bool(i["unique"]),
                    _where(i.get("dialect_options", {})),
                )
                for i in indexes.get(table, [])
            },
            "unique": {u["name"]: tuple(u["column_names"]) for u in uniques.get(table, [])},
            "foreign_keys": {
                f["name"]: (
                    tuple(f["constrained_columns"]),
                    f["referred_table"],
                    tuple(f["referred_columns"]),
                    (f.get("options") or {}).get("ondelete"),
                )
                for f in fks.get(table, [])
            },
            "checks": {c["name"]: c["sqltext"] for c in checks.get(table, [])},
        }
    if conn.dialect.name == "sqlite":
        triggers = _pairs(conn, "SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
        functions: dict[str, str] = {}
    else:
        triggers = _pairs(
            conn, "SELECT tgname, pg_get_triggerdef(oid) FROM pg_trigger WHERE NOT tgisinternal"
        )
        functions = _pairs(
            conn,
            "SELECT p.proname, p.prosrc FROM pg_proc p JOIN pg_namespace n "
            "ON n.oid = p.pronamespace WHERE n.nspname = 'public'",
        )
    return {"tables": tables, "triggers": triggers, "functions": functions}


def _differences(got: Any, want: Any, path: str = "") -> list[str]:
    """Where two schemas differ, one line per difference (so a failure names what differs)."""
    if isinstance(got, dict) and isinstance(want, dict):
        return [
            line
            for key in sorted(set(got) | set(want))
            for line in (
                [f"{path}/{key}: only built from nothing"]
                if key not in got
                else [f"{path}/{key}: only here"]
                if key not in want
                else _differences(got[key], want[key], f"{path}/{key}")
            )
        ]
    return [] if got == want else [f"{path}: {got!r} instead of {want!r}"]


def _pairs(conn: sa.Connection, sql: str) -> dict[str, str]:
    return {name: text for name, text in conn.execute(sa.text(sql))}


def _where(options: dict[str, Any]) -> str:
    """A partial index's WHERE, as SQLite or PostgreSQL reflects it."""
    for key in ("sqlite_where", "postgresql_where"):
        if options.get(key) is not None:
            return str(options[key])
    return ""


def _audit_update_is_refused(engine: sa.Engine) -> bool:
    """Whether the database itself refuses to rewrite the audit log (its triggers are there)."""
    try:
        with engine.begin() as conn:
            conn.execute(sa.text("UPDATE audit_events SET action = 'rewritten'"))
    except sa.exc.DBAPIError as e:
        assert "append-only" in str(e.orig)
        return True
    return False


def _foreign_keys_enforced(engine: sa.Engine) -> bool:
    """Whether the app's connections still enforce foreign keys after the migrations (on SQLite
    they run with enforcement off: see ``portal/migrations/env.py``)."""
    if engine.dialect.name != "sqlite":
        return True
    with engine.connect() as conn:
        return bool(conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one())


def _a_renewal_refuses_the_downgrade(app: Flask, down: str) -> None:
    """While an allocation renews another (sharing its award), ``flask db downgrade`` below
    ``RENEWALS`` says why it refuses, exits 1, and leaves the database as it was."""
    with db.engine.begin() as conn:
        names = [
            f'"{c["name"]}"'
            for c in sa.inspect(conn).get_columns("allocations")
            if c["name"] not in ("id", "account", "renewed_from_id")
        ]
        columns = ", ".join(names)
        conn.execute(
            sa.text(
                f"INSERT INTO allocations ({columns}, account, renewed_from_id) "
                f"SELECT {columns}, account || '-renewal', id FROM allocations "
                "WHERE id = (SELECT min(id) FROM allocations)"
            )
        )
        before = _row_counts(conn)
    result = app.test_cli_runner().invoke(args=["db", "downgrade", down])
    assert result.exit_code == 1
    assert f"Cannot downgrade below {RENEWALS}: 1 allocation(s) renew another" in result.output
    assert "Traceback" not in result.output
    with db.engine.begin() as conn:
        assert MigrationContext.configure(conn).get_current_revision() == RENEWALS
        assert _row_counts(conn) == before
        conn.execute(sa.text("DELETE FROM allocations WHERE renewed_from_id IS NOT NULL"))
    assert _foreign_keys_enforced(db.engine)


def _fill_empty_tables(session: AnySession) -> None:
    """A real-looking row in each table the demo leaves empty (nobody logged in, sent mail,
    declared a committee or a waiver, chose a digest or was refused a page yet)."""

    def person(sub: str) -> User:
        return session.scalars(_user_named(sub)).one()

    admin, officer, reviewer = person("admin"), person("officer"), person("reviewer2")
    call = session.scalars(sa.select(Call).order_by(Call.id)).first()
    proposal = session.scalars(sa.select(Proposal).order_by(Proposal.id)).first()
    message = session.scalars(sa.select(OutboxMessage).order_by(OutboxMessage.id)).first()
    assert call is not None and proposal is not None and message is not None
    session.add(CommitteeMember(call=call, user=reviewer))
    session.add(
        ConflictWaiver(
            proposal_id=proposal.id,
            reviewer_id=reviewer.id,
            reason="Co-authored a workshop paper six years ago; no joint work since.",
            waived_by_id=officer.id,
        )
    )
    start_session(session, admin, identity=admin.identities[0], ip="192.0.2.7", user_agent="test")
    set_preferences(session, admin, {optional_kinds()[0].key: Delivery.DIGEST})
    session.add(
        OAuthLoginState(
            key="demo:abandoned",
            binding="0" * 64,
            data="{}",
            expires_at=utcnow() + dt.timedelta(minutes=10),
        )
    )
    session.add(
        DeliveryAttempt(message_id=message.id, ok=False, smtp_code=None, error="Connection refused")
    )
    audit.record_refusal(
        session,
        actor=reviewer,
        ip="192.0.2.8",
        method="GET",
        path="/admin/audit",
        window_seconds=60,
    )
    session.flush()


def _user_named(sub: str) -> sa.Select[User]:
    """The demo person who logs in as ``sub`` at the demo identity provider."""
    return sa.select(User).join(Identity).where(Identity.subject == sub)


@contextmanager
def _populated_at_head(kind: str, folder: Path) -> Iterator[Flask]:
    """An app on a new database at head holding the demo program and a row in every other table."""
    with temporary_database(kind, folder) as url:
        app = create_app(
            {**TEST_CONFIG, "DATABASE_URL": url, "ATTACHMENT_FOLDER": str(folder / "files")}
        )
        try:
            with app.app_context():
                upgrade()
                load_if_empty()
                _fill_empty_tables(db.session)
                db.session.commit()
            yield app
        finally:
            with app.app_context():
                db.engine.dispose()


def _schemas_built_from_nothing(kind: str, folder: Path, revisions: list[str]) -> dict[str, Any]:
    """The schema ``upgrade`` builds on an empty database at each revision (oldest first)."""
    schemas: dict[str, Any] = {}
    with temporary_database(kind, folder) as url:
        app = create_app({**TEST_CONFIG, "DATABASE_URL": url})
        with app.app_context():
            for rev in revisions:
                upgrade(revision=rev)
                with db.engine.connect() as conn:
                    schemas[rev] = _schema(conn)
            db.engine.dispose()
    return schemas


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_a_populated_database_goes_down_every_migration_and_back_to_head_keeping_its_rows(
    kind: str, tmp_path: Path
) -> None:
    with _populated_at_head(kind, tmp_path) as app:
        with app.app_context():
            script = ScriptDirectory(current_app.extensions["migrate"].directory)
            # Head first, down to the initial schema (undoing that would drop every table).
            steps = [(r.revision, r.down_revision) for r in script.walk_revisions()]
            oldest_first = [rev for rev, _ in reversed(steps)]
            built = _schemas_built_from_nothing(kind, tmp_path, oldest_first)
            with db.engine.connect() as conn:
                at_head = _row_counts(conn)
                going = {
                    (rev, table): conn.execute(
                        sa.text(f'SELECT count(*) FROM "{table}" WHERE {where}')
                    ).scalar_one()
                    for rev, tables in REWRITTEN.items()
                    for table, where in tables.items()
                }
            assert [t for t, n in at_head.items() if n == 0] == [], "every table has rows at head"
            expected = dict(at_head)

            for rev, down in steps:
                if down is None:
                    break
                assert isinstance(down, str)
                if rev == RENEWALS:
                    _a_renewal_refuses_the_downgrade(app, down)
                downgrade(revision=down)
                for (undone, table), n in going.items():
                    if undone == rev:
                        expected[table] -= n
                with db.engine.connect() as conn:
                    counts = _row_counts(conn)
                    schema = _schema(conn)
                assert {t: n for t, n in counts.items() if n == 0} == {}, f"empty tables at {down}"
                assert counts == {t: expected[t] for t in counts}, f"rows lost undoing {rev}"
                assert _differences(schema, built[down]) == [], f"undoing {rev}"
                assert _audit_update_is_refused(db.engine), f"audit log writable at {down}"

                # The step up again, from a database with rows in every table it has.
                upgrade(revision=rev)
                with db.engine.connect() as conn:
                    again = _row_counts(conn)
                    assert _differences(_schema(conn), built[rev]) == [], f"applying {rev}"
                assert {t: again[t] for t in counts} == counts, f"rows lost applying {rev}"
                assert _audit_update_is_refused(db.engine), f"audit log writable at {rev}"
                downgrade(revision=down)
                with db.engine.connect() as conn:
                    assert _row_counts(conn) == counts, f"rows lost undoing {rev} a second time"

            # All of the initial schema's tables have rows: up to head in one go.
            upgrade()
            with db.engine.connect() as conn:
                counts = _row_counts(conn)
                ctx = MigrationContext.configure(conn, opts={"compare_type": True})
                diff = compare_metadata(ctx, db.metadata)
                schema = _schema(conn)
            kept = sorted(set(built[oldest_first[0]]["tables"]) - {"alembic_version"})
            assert {t: counts[t] for t in kept} == {t: expected[t] for t in kept}
            assert diff == []
            assert _differences(schema, built[oldest_first[-1]]) == []
            assert _audit_update_is_refused(db.engine)
            assert _foreign_keys_enforced(db.engine)

        # Each page in a request of its own, outside the test's app context (whose ``g`` a request
        # would share, and with it the user logged in first).
        for who, page in PAGES:
            client = app.test_client()
            with app.app_context():
                login(client, db.session.scalars(_user_named(who)).one())
            assert client.get(page).status_code == 200, (who, page)
        assert app.test_client().get("/readyz").status_code == 200
