"""The test app's configuration, and logging a user in without an identity provider (for tests
that are not about logging in; those use ``tests/support/oidc.py``)."""

from __future__ import annotations

from typing import Any

from flask.testing import FlaskClient

from portal.auth.models import User

TEST_CONFIG: dict[str, Any] = {
    "ENV": "testing",
    "TESTING": True,
    "SECRET_KEY": "test-secret-key-that-is-long-enough-for-prod",
    "WTF_CSRF_ENABLED": False,
    "RATELIMIT_ENABLED": False,
    "SERVER_NAME": "portal.test",
}


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
