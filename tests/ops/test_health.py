"""``/healthz`` says the process answers; ``/readyz`` says whether this instance can serve pages
(database, migrations at head, templates) and reports the outbox, without naming any configuration."""

from __future__ import annotations

import datetime as dt
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlalchemy.orm import Session

from portal import create_app
from portal.core.models import utcnow
from portal.extensions import db as _db
from portal.notifications.models import OutboxState
from tests.factories import make_outbox_message
from tests.support.app import TEST_CONFIG, create_schema

SECRET_BITS = ("sqlite", "postgres", "password", "secret", "/", "127.0.0.1")


def _leaks(body: str) -> list[str]:
    """Configuration a readiness answer must never show (paths, hosts, URLs, key material)."""
    return [bit for bit in SECRET_BITS if bit in body]


def test_healthz_answers_without_the_database(tmp_path: Path) -> None:
    app = create_app({**TEST_CONFIG, "DATABASE_URL": "sqlite:///" + str(tmp_path / "no" / "x")})
    resp = app.test_client().get("/healthz")
    assert resp.status_code == 200
    assert resp.get_json() == {"status": "ok"}


def test_readyz_reports_every_check_and_the_outbox(client: FlaskClient, db: Session) -> None:
    make_outbox_message(db, next_attempt_at=utcnow() - dt.timedelta(minutes=10))
    make_outbox_message(
        db, state=OutboxState.FAILED, next_attempt_at=utcnow() + dt.timedelta(hours=1)
    )
    make_outbox_message(db, state=OutboxState.DEAD)
    make_outbox_message(db, state=OutboxState.SENT)
    db.commit()

    resp = client.get("/readyz")

    assert resp.status_code == 200, resp.get_json()
    body = resp.get_json()
    assert body["status"] == "ready"
    assert body["checks"] == {"database": "ok", "migrations": "ok", "templates": "ok"}
    outbox = body["outbox"]
    assert (outbox["waiting"], outbox["due"], outbox["dead"]) == (2, 1, 1)
    assert 590 <= outbox["oldest_due_seconds"] <= 3600
    assert resp.headers["Cache-Control"] == "no-store"
    assert _leaks(resp.get_data(as_text=True)) == []


@pytest.fixture
def bare_app(tmp_path: Path) -> Iterator[Flask]:
    app = create_app({**TEST_CONFIG, "DATABASE_URL": f"sqlite:///{tmp_path / 'r.sqlite3'}"})
    with app.app_context():
        create_schema()
    yield app
    with app.app_context():
        _db.engine.dispose()


def _set_revision(app: Flask, revision: str | None) -> None:
    with app.app_context(), _db.engine.begin() as conn:
        conn.execute(text("DELETE FROM alembic_version"))
        if revision:
            conn.execute(text("INSERT INTO alembic_version VALUES (:r)"), {"r": revision})


@pytest.mark.parametrize(
    ("revision", "reason"),
    [
        (None, "database behind the code; run flask db upgrade"),
        ("deb7e5458c17", "database behind the code; run flask db upgrade"),
        ("ffffffffffff", "database ahead of the code (a newer release migrated it)"),
    ],
)
@pytest.mark.once
def test_readyz_fails_when_the_database_is_not_at_head(
    bare_app: Flask, revision: str | None, reason: str
) -> None:
    _set_revision(bare_app, revision)
    resp = bare_app.test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["status"] == "not ready"
    assert resp.get_json()["checks"]["migrations"] == reason
    assert "outbox" not in resp.get_json()


@pytest.mark.once
def test_readyz_fails_when_the_database_was_never_migrated(tmp_path: Path) -> None:
    app = create_app({**TEST_CONFIG, "DATABASE_URL": f"sqlite:///{tmp_path / 'empty.sqlite3'}"})
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["checks"]["migrations"] == "database not migrated; run flask db upgrade"


@pytest.mark.once
def test_readyz_fails_when_the_database_is_unreachable(tmp_path: Path) -> None:
    url = "postgresql://portal:hunter2@127.0.0.1:1/portal"  # nothing listens on port 1
    app = create_app({**TEST_CONFIG, "DATABASE_URL": url})
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["checks"] == {
        "database": "unreachable",
        "migrations": "skipped",
        "templates": "ok",
    }
    assert "hunter2" not in resp.get_data(as_text=True)
    assert _leaks(resp.get_data(as_text=True)) == []


@pytest.mark.once
def test_readyz_fails_when_templates_are_missing(tmp_path: Path) -> None:
    app = create_app({**TEST_CONFIG, "DATABASE_URL": f"sqlite:///{tmp_path / 't.sqlite3'}"})
    app.template_folder = str(tmp_path / "no-templates")
    app.jinja_env.cache = {}
    with app.app_context():
        create_schema()
    resp = app.test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["checks"]["templates"] == "templates missing or broken"


@pytest.mark.once
def test_readyz_fails_when_the_migration_scripts_are_missing(
    bare_app: Flask, tmp_path: Path
) -> None:
    copy = tmp_path / "migrations"
    shutil.copytree(bare_app.extensions["migrate"].directory, copy)
    bare_app.extensions["migrate"].directory = str(copy)
    assert bare_app.test_client().get("/readyz").status_code == 200
    shutil.rmtree(copy)
    resp = bare_app.test_client().get("/readyz")
    assert resp.status_code == 503
    assert resp.get_json()["checks"]["migrations"] == "migration scripts missing"
