"""An app on its own committed database, and logged-in test clients for it.

The shared ``db`` fixture (tests/conftest.py) keeps a test inside one uncommitted transaction, so
two requests there can never race. Tests about concurrency need what production has: real
commits and one connection per request. ``live_app`` gives an app on a fresh database (a SQLite
file or a new PostgreSQL database, dropped afterwards) whose schema is made by ``create_all``;
``live_session`` is a plain session on it that commits for real; ``logged_in_client`` is a test
client of its own with a logged-in user, as one browser would be.

tests/conftest.py offers it as the session-scoped fixture ``race_app`` (once per database).

Rows written through ``live_session`` stay until the database is dropped at the end of the test
session (the append-only audit log refers to users and objects): each test makes its own.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal import create_app
from portal.auth.models import User
from portal.auth.services import start_session
from portal.auth.sessions import SESSION_TOKEN_KEY
from portal.extensions import db
from tests.databases import temporary_database
from tests.support.app import TEST_CONFIG, create_schema

#: The databases every live test runs on (PostgreSQL is skipped locally, required under CI=true).
LIVE_DATABASES = ("sqlite", "postgresql")


@contextmanager
def live_app(kind: str, folder: Path, config: Mapping[str, Any] | None = None) -> Iterator[Flask]:
    """An app on a new, committed database of ``kind`` ("sqlite" or "postgresql").

    ``config`` is laid over TEST_CONFIG (which has ``SERVER_NAME`` and no CSRF check)."""
    with temporary_database(kind, folder) as url:
        app = create_app({**TEST_CONFIG, **(config or {}), "DATABASE_URL": url})
        with app.app_context():
            create_schema()
        try:
            yield app
        finally:
            with app.app_context():
                db.session.remove()
                db.engine.dispose()


@contextmanager
def live_session(app: Flask) -> Iterator[Session]:
    """A plain session on ``app``'s engine, inside an app context (e-mails read the config).

    Committed when the block ends without an error, rolled back otherwise; either way closed, so
    nothing it holds is mistaken for what the database says later."""
    with app.app_context():
        session = Session(db.engine, expire_on_commit=False)
        try:
            yield session
            session.commit()
        except BaseException:
            session.rollback()
            raise
        finally:
            session.close()


def logged_in_client(app: Flask, user_id: int) -> FlaskClient:
    """A new test client logged in as the user ``user_id``, the way the login view leaves one: a
    committed server-side login session and its token in the client's cookie session."""
    with live_session(app) as session:
        user = session.get(User, user_id)
        if user is None:
            raise LookupError(f"no user {user_id} in the live database")
        _, token = start_session(session, user, identity=None, ip="127.0.0.1", user_agent="pytest")
    client = app.test_client()
    with client.session_transaction() as s:
        s.clear()
        s["_user_id"] = str(user_id)
        s["_fresh"] = True
        s[SESSION_TOKEN_KEY] = token
        s.permanent = True
    return client
