"""Mail goes to verified addresses only. An identity provider that lets people type any address
(and any name) must not make the portal write to a stranger: the person is asked to verify the
address by a signed, expiring link — the one mail an unverified address may get."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from flask import Flask
from flask.testing import FlaskClient
from itsdangerous import TimestampSigner, URLSafeTimedSerializer
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal import create_app
from portal.auth import services
from portal.auth.emails import welcome
from portal.auth.models import IdentityProvider, User
from portal.core.audit import AuditEvent
from portal.extensions import db as _db
from portal.notifications.models import OutboxMessage
from portal.notifications.services import enqueue_email
from tests.factories import make_user
from tests.support.app import TEST_CONFIG, login
from tests.support.oidc import logged_in_user_id, oidc_login, set_claims

STRANGER = "someone.else@example.org"


def _outbox(db: Session) -> list[OutboxMessage]:
    db.expire_all()
    return list(db.scalars(select(OutboxMessage).order_by(OutboxMessage.id)))


def _typed_any_address(client: FlaskClient, db: Session, idp_a_url: str, sub: str) -> User:
    """A first login at a provider that lets its users type any address, unverified."""
    set_claims(
        idp_a_url, sub, {"name": "Mallory Typed", "email": STRANGER, "email_verified": False}
    )
    oidc_login(client, "idp-a", idp_a_url, sub)
    uid = logged_in_user_id(client)
    assert uid is not None
    user = db.get(User, uid)
    assert user is not None and user.email == STRANGER and not user.email_verified
    return user


def test_people_with_an_unverified_address_get_no_mail(app: Flask, db: Session) -> None:
    """``enqueue_email`` writes no row for a person whose address nobody verified; a verified
    person and an explicitly given address are mailed as before."""
    unverified = make_user(db, email="typed@example.org", email_verified=False)
    verified = make_user(db, email="real@example.org")
    with app.app_context():
        rows = enqueue_email(
            db,
            "auth/welcome",
            to=[unverified, verified, "explicit@example.org"],
            context={"name": "x", "has_affiliation": False},
        )
        assert [r.to_addr for r in rows] == ["real@example.org", "explicit@example.org"]
        welcome(db, unverified)
    assert [m.to_addr for m in _outbox(db)] == ["real@example.org", "explicit@example.org"]


def test_first_login_with_an_unverified_address_mails_nobody(
    client: FlaskClient, db: Session, provider_a: IdentityProvider, idp_a_url: str
) -> None:
    _typed_any_address(client, db, idp_a_url, "mallory")
    assert _outbox(db) == []


def test_the_account_page_offers_a_link_that_verifies_the_address(
    app: Flask, client: FlaskClient, db: Session, provider_a: IdentityProvider, idp_a_url: str
) -> None:
    user = _typed_any_address(client, db, idp_a_url, "mallory2")
    page = client.get("/auth/account").get_data(as_text=True)
    assert STRANGER in page and "not verified" in page and "Send me a verification link" in page

    assert client.post("/auth/account/verify-email").status_code == 302
    (msg,) = _outbox(db)
    # One mail, to the address as such: no account, no name from the identity provider.
    assert (msg.template, msg.to_addr, msg.recipient_id, msg.to_name) == (
        "auth/verify_email",
        STRANGER,
        None,
        None,
    )
    assert "Mallory" not in str(msg.context)
    token = msg.context["token"]

    # Opening the link shows what it confirms and changes nothing (a GET never changes state).
    resp = client.get(f"/auth/verify-email/{token}")
    assert resp.status_code == 200 and STRANGER in resp.get_data(as_text=True)
    db.expire_all()
    assert not user.email_verified

    assert client.post(f"/auth/verify-email/{token}").status_code == 302
    db.expire_all()
    assert user.email_verified
    event = db.scalars(select(AuditEvent).where(AuditEvent.action == "user.email_verify")).one()
    assert event.actor_id == user.id and event.details["email"] == STRANGER
    # Now the person is mailed like everyone else; asking for another link is refused.
    with app.app_context():
        rows = enqueue_email(db, "auth/welcome", to=user, context={})
    assert [r.to_addr for r in rows] == [STRANGER]
    assert client.post("/auth/account/verify-email").status_code == 303
    assert [m.template for m in _outbox(db)] == ["auth/verify_email", "auth/welcome"]


def _expired_token(app: Flask, user: User) -> str:
    class Past(TimestampSigner):
        """Signs as if it were a little longer ago than the links' maximum age."""

        def get_timestamp(self) -> int:
            hours = int(app.config["EMAIL_VERIFY_MAX_AGE_HOURS"]) + 1
            return int((dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours)).timestamp())

    past = URLSafeTimedSerializer(app.config["SECRET_KEY"], salt=services._VERIFY_SALT, signer=Past)
    return past.dumps({"u": user.id, "e": user.email})


def test_a_link_verifies_only_its_own_accounts_current_address_before_it_expires(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    holder = make_user(db, email="holder@example.org", email_verified=False)
    other = make_user(db, email="other@example.org", email_verified=False)
    with app.app_context():
        services.send_email_verification(db, holder)
    token = _outbox(db)[-1].context["token"]

    # Someone else (e.g. the real owner of a typed address) cannot confirm it for the account.
    login(client, other)
    assert client.get(f"/auth/verify-email/{token}").status_code == 403
    assert client.post(f"/auth/verify-email/{token}").status_code == 403
    # Forged or altered, or expired: nothing.
    login(client, holder)
    assert client.get(f"/auth/verify-email/{token[:-2]}xx").status_code == 422
    expired = _expired_token(app, holder)
    assert client.get(f"/auth/verify-email/{expired}").status_code == 422
    assert client.post(f"/auth/verify-email/{expired}").status_code == 303
    # An address that is no longer the account's is not verified by the old link.
    holder.email = "new@example.org"
    db.flush()
    assert client.get(f"/auth/verify-email/{token}").status_code == 409
    assert client.post(f"/auth/verify-email/{token}").status_code == 303
    db.expire_all()
    assert not holder.email_verified and not other.email_verified
    assert (
        db.scalars(select(AuditEvent).where(AuditEvent.action == "user.email_verify")).all() == []
    )


def test_asking_for_verification_links_is_rate_limited(tmp_path: Path) -> None:
    app = create_app(
        {
            **TEST_CONFIG,
            "RATELIMIT_ENABLED": True,
            "AUTH_RATE_LIMIT": "2 per minute",
            "DATABASE_URL": f"sqlite:///{tmp_path / 'rl.sqlite3'}",
        }
    )
    with app.app_context():
        _db.create_all()
        user = User(display_name="R", email="r@example.org", email_verified=False)
        _db.session.add(user)
        _db.session.commit()
        client = app.test_client()
        login(client, user)
        codes = [client.post("/auth/account/verify-email").status_code for _ in range(3)]
        assert codes == [302, 302, 429]
        _db.session.remove()
