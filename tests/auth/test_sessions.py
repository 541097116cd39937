"""Server-side sessions: new on login, ended on logout (a replayed cookie is refused), idle and
absolute timeouts, disabled users, cookie flags, rate limits."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal import create_app
from portal.auth.models import IdentityProvider, LoginSession, Role, User
from portal.auth.services import set_user_disabled
from portal.core.audit import AuditEvent
from portal.extensions import db as _db
from tests.factories import make_user
from tests.support.app import TEST_CONFIG, login
from tests.support.oidc import logged_in_user_id, oidc_login, set_claims


def _cookie(client: FlaskClient) -> str:
    c = client.get_cookie("atom_session", domain="portal.test")
    assert c is not None
    return c.value


def _set_cookie(client: FlaskClient, value: str) -> None:
    client.set_cookie("atom_session", value, domain="portal.test")


def test_logout_ends_the_session_and_a_replayed_cookie_is_refused(
    client: FlaskClient, db: Session, provider_a: IdentityProvider, idp_a_url: str
) -> None:
    oidc_login(client, "idp-a", idp_a_url, "alice")
    uid = logged_in_user_id(client)
    assert uid is not None
    old_cookie = _cookie(client)
    assert client.post("/auth/logout").status_code == 302
    assert client.get("/dashboard").status_code == 302
    # The attacker who kept the old cookie gets nothing: its server-side record is ended.
    _set_cookie(client, old_cookie)
    resp = client.get("/dashboard")
    assert resp.status_code == 302 and resp.headers["Location"].startswith("/auth/login")
    record = db.scalars(select(LoginSession).where(LoginSession.user_id == uid)).one()
    assert record.end_reason == "logout" and record.ended_at is not None
    assert db.scalars(select(AuditEvent).where(AuditEvent.action == "auth.logout")).first()


def test_login_starts_a_new_session(
    client: FlaskClient, provider_a: IdentityProvider, idp_a_url: str
) -> None:
    with client.session_transaction() as s:
        s["planted"] = "by-an-attacker"
    oidc_login(client, "idp-a", idp_a_url, "alice")
    with client.session_transaction() as s:
        assert "planted" not in s and "_login_binding" not in s
        assert set(s) >= {"_user_id", "_sid"}


def test_logging_in_again_replaces_the_previous_session(
    client: FlaskClient, db: Session, provider_a: IdentityProvider, idp_a_url: str
) -> None:
    oidc_login(client, "idp-a", idp_a_url, "alice")
    first = _cookie(client)
    oidc_login(client, "idp-a", idp_a_url, "bob")
    _set_cookie(client, first)
    assert client.get("/dashboard").status_code == 302
    reasons = set(db.scalars(select(LoginSession.end_reason)))
    assert "replaced" in reasons


def test_idle_session_ends(app: Flask, client: FlaskClient, db: Session) -> None:
    user = make_user(db, Role.REVIEWER)
    login(client, user)
    assert client.get("/dashboard").status_code == 200
    idle = app.config["SESSION_IDLE_MINUTES"]
    db.execute(
        update(LoginSession)
        .where(LoginSession.user_id == user.id)
        .values(last_seen_at=dt.datetime.now(dt.UTC) - dt.timedelta(minutes=idle + 1))
    )
    db.flush()
    assert client.get("/dashboard").status_code == 302
    db.expire_all()
    assert (
        db.scalars(select(LoginSession.end_reason).where(LoginSession.user_id == user.id)).one()
        == "idle"
    )


def test_active_session_still_ends_at_the_absolute_timeout(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    user = make_user(db, Role.REVIEWER)
    login(client, user)
    hours = app.config["SESSION_ABSOLUTE_HOURS"]
    db.execute(
        update(LoginSession)
        .where(LoginSession.user_id == user.id)
        .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours, minutes=1))
    )
    db.flush()
    assert client.get("/dashboard").status_code == 302
    db.expire_all()
    assert (
        db.scalars(select(LoginSession.end_reason).where(LoginSession.user_id == user.id)).one()
        == "expired"
    )


def test_recent_activity_is_recorded_at_most_once_a_minute(
    client: FlaskClient, db: Session
) -> None:
    user = make_user(db, Role.REVIEWER)
    login(client, user)
    old = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
    db.execute(update(LoginSession).where(LoginSession.user_id == user.id).values(last_seen_at=old))
    db.flush()
    client.get("/dashboard")
    db.expire_all()
    seen = db.scalars(
        select(LoginSession.last_seen_at).where(LoginSession.user_id == user.id)
    ).one()
    assert seen > old + dt.timedelta(minutes=4)


def test_disabling_a_user_ends_their_sessions_and_blocks_login(
    client: FlaskClient, db: Session, provider_a: IdentityProvider, idp_a_url: str
) -> None:
    set_claims(idp_a_url, "carol", {"name": "Carol"})
    oidc_login(client, "idp-a", idp_a_url, "carol")
    uid = logged_in_user_id(client)
    assert uid is not None
    admin = make_user(db, Role.ADMIN)
    carol = db.get(User, uid)
    assert carol is not None
    set_user_disabled(db, carol, actor=admin, disabled=True, reason="left the lab")
    db.flush()
    assert client.get("/dashboard").status_code == 302  # the live session is gone
    resp = oidc_login(client, "idp-a", idp_a_url, "carol")
    assert resp.status_code == 403 and "disabled" in resp.get_data(as_text=True)
    assert logged_in_user_id(client) is None


def test_session_cookie_is_secure_httponly_samesite_in_production(tmp_path: Path) -> None:
    app = create_app(
        {
            **TEST_CONFIG,
            "ENV": "production",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'prod.sqlite3'}",
        }
    )
    assert app.config["SESSION_COOKIE_SECURE"] is True
    assert app.config["SESSION_COOKIE_HTTPONLY"] is True
    assert (
        app.config["SESSION_COOKIE_SAMESITE"] == "Lax"
    )  # Lax: the IdP's redirect back must carry it
    with app.test_request_context():
        from flask import session

        session["x"] = 1
        resp = app.make_response("")
        app.session_interface.save_session(app, session, resp)
        header = resp.headers["Set-Cookie"]
    assert "Secure" in header and "HttpOnly" in header and "SameSite=Lax" in header
    # The session cookie lives no longer than the absolute session timeout.
    assert app.permanent_session_lifetime == dt.timedelta(
        hours=app.config["SESSION_ABSOLUTE_HOURS"]
    )


def test_login_endpoints_are_rate_limited(tmp_path: Path) -> None:
    app = create_app(
        {
            **TEST_CONFIG,
            "RATELIMIT_ENABLED": True,
            "AUTH_RATE_LIMIT": "3 per minute",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'rl.sqlite3'}",
        }
    )
    with app.app_context():
        _db.create_all()
    client = app.test_client()
    codes = [client.get("/auth/login").status_code for _ in range(5)]
    assert codes[:3] == [200, 200, 200] and codes[3:] == [429, 429]
    codes = [client.get("/auth/callback/x?code=a&state=b").status_code for _ in range(4)]
    assert codes[-1] == 429
