"""The test app's configuration, and logging a user in without an identity provider (for tests
that are not about logging in; those use ``tests/support/oidc.py``)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from flask.testing import FlaskClient
from flask_sqlalchemy.session import _app_ctx_id
from sqlalchemy import Connection
from sqlalchemy.orm import Session, scoped_session, sessionmaker

from portal.auth.models import User
from portal.extensions import db as _db

TEST_CONFIG: dict[str, Any] = {
    "ENV": "testing",
    "TESTING": True,
    "SECRET_KEY": "test-secret-key-that-is-long-enough-for-prod",
    "WTF_CSRF_ENABLED": False,
    "RATELIMIT_ENABLED": False,
    "SERVER_NAME": "portal.test",
    # Public pages are not kept between requests (one test's page must not answer another's).
    "PUBLIC_CACHE_SECONDS": 0,
}


@contextmanager
def sessions_on(connection: Connection) -> Iterator[Session]:
    """A test's session, with the app's sessions (``db.session``) joining ``connection`` too, each
    working in SAVEPOINTs of the transaction open on it: a ``commit()`` only releases a savepoint,
    and what is not committed is rolled back when the block ends."""
    original = _db.session
    _db.session = scoped_session(
        # Flask-SQLAlchemy's own Session subclass adds nothing the tests' code paths use.
        sessionmaker(bind=connection, join_transaction_mode="create_savepoint"),  # type: ignore[arg-type]
        scopefunc=_app_ctx_id,
    )
    session = Session(bind=connection, join_transaction_mode="create_savepoint")
    try:
        yield session
    finally:
        session.close()
        _db.session = original


def login(client: FlaskClient, user: User) -> FlaskClient:
    """Start a session for ``user`` the way the login view does after a successful OIDC login:
    a server-side session record (in the test's session, so it is rolled back) and its token in
    a fresh cookie session."""
    from sqlalchemy import inspect

    from portal.auth.services import start_session
    from portal.auth.sessions import SESSION_TOKEN_KEY

    session = inspect(user).session
    assert session is not None, "login() needs a user from the test's database session"
    _, token = start_session(session, user, identity=None, ip="127.0.0.1", user_agent="pytest")
    # The test's own session only releases a savepoint here (the test is still rolled back).
    session.commit()
    with client.session_transaction() as s:
        s.clear()
        s["_user_id"] = user.get_id()
        s["_fresh"] = True
        s[SESSION_TOKEN_KEY] = token
        s.permanent = True
    return client


def create_schema() -> None:
    """The tables from the models (``create_all``, much faster than running every migration),
    stamped with the migrations' head as ``flask db upgrade`` would leave them, so ``/readyz``
    sees a database at head. In an app context. (tests/core/test_migrations.py proves the migrations
    build the same schema.)"""
    from alembic.script import ScriptDirectory
    from flask import current_app
    from sqlalchemy import text

    _db.create_all()
    script = ScriptDirectory(current_app.extensions["migrate"].directory)
    with _db.engine.begin() as conn:
        conn.execute(
            text("CREATE TABLE IF NOT EXISTS alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
        )
        conn.execute(text("DELETE FROM alembic_version"))
        for head in script.get_heads():
            conn.execute(text("INSERT INTO alembic_version VALUES (:v)"), {"v": head})
