"""UserInfo, profile refresh, client authentication, logout at the provider and back-channel logout,
against the hand-signing stub provider (its bad answers are what a real provider never gives).
The certified provider (node-oidc-provider) runs the same journeys in test_certified_provider.py."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from flask import Flask
from flask.testing import FlaskClient
from joserfc import jwt
from joserfc.jwk import KeySet
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.keys import public_jwks
from portal.auth.models import (
    IdentityProvider,
    LoginSession,
    ProviderInstitution,
    Role,
    TokenAuthMethod,
    User,
    UserinfoMode,
)
from portal.core.audit import AuditEvent
from portal.institutions.models import AffiliationState
from tests.auth.stub_idp import StubIdP
from tests.factories import make_institution, make_user
from tests.support.app import login
from tests.support.oidc import authorize_at_stub, logged_in_user_id, path_of, start_login


def _login(client: FlaskClient) -> int:
    resp = client.get(path_of(authorize_at_stub(start_login(client, "stub"))))
    return resp.status_code


def _people(db: Session) -> list[User]:
    db.expire_all()
    return list(db.scalars(select(User).order_by(User.id)))


def _failures(db: Session) -> list[str]:
    events = db.scalars(select(AuditEvent).where(AuditEvent.action == "auth.login_failed"))
    return [e.details["reason"] for e in events]


def test_claims_only_in_userinfo_make_a_complete_person(
    client: FlaskClient, db: Session, stub: StubIdP, stub_provider: IdentityProvider
) -> None:
    inst = make_institution(db, name="Stub University")
    stub_provider.served.append(ProviderInstitution(institution=inst))
    db.flush()
    stub.userinfo = {
        "email": f"ada@{inst.domains[0].domain}",
        "email_verified": True,
        "name": "Ada Certified",
    }
    assert _login(client) == 302
    (ada,) = [u for u in _people(db) if u.display_name == "Ada Certified"]
    assert ada.email == f"ada@{inst.domains[0].domain}" and ada.email_verified
    assert [(a.institution_id, a.state) for a in ada.affiliations] == [
        (inst.id, AffiliationState.ACTIVE)
    ]
    assert stub.userinfo_calls == 1


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("sub_mismatch", "userinfo_sub_mismatch"),
        ("down", "userinfo_failed"),
        ("garbage", "userinfo_not_json"),
        ("jwt_other_key", "userinfo_jwt_invalid:BadSignatureError"),
    ],
)
def test_a_bad_userinfo_answer_fails_the_login_and_creates_nobody(
    client: FlaskClient,
    db: Session,
    stub: StubIdP,
    stub_provider: IdentityProvider,
    mode: str,
    reason: str,
) -> None:
    stub.userinfo_mode = mode
    stub.userinfo = {"email": "x@example.org", "email_verified": True, "name": "X"}
    before = len(_people(db))
    assert _login(client) == 400
    assert len(_people(db)) == before
    assert logged_in_user_id(client) is None
    assert _failures(db) == [reason]


def test_a_signed_userinfo_jwt_is_accepted(
    client: FlaskClient, db: Session, stub: StubIdP, stub_provider: IdentityProvider
) -> None:
    stub.userinfo_mode = "jwt"
    stub.userinfo = {"email": "jwt@example.org", "email_verified": True, "name": "Jo Signed"}
    assert _login(client) == 302
    assert any(u.display_name == "Jo Signed" for u in _people(db))


@pytest.mark.parametrize(
    ("mode", "id_token_claims", "calls"),
    [
        (UserinfoMode.NEVER, {}, 0),
        (UserinfoMode.WHEN_MISSING, {"email": "a@example.org", "name": "In Token"}, 0),
        (UserinfoMode.WHEN_MISSING, {"email": "a@example.org"}, 1),
        (UserinfoMode.ALWAYS, {"email": "a@example.org", "name": "In Token"}, 1),
    ],
)
def test_userinfo_is_asked_as_the_provider_is_set_up(
    client: FlaskClient,
    db: Session,
    stub: StubIdP,
    stub_provider: IdentityProvider,
    mode: UserinfoMode,
    id_token_claims: dict[str, str],
    calls: int,
) -> None:
    stub_provider.userinfo_mode = mode
    db.flush()
    stub.claims = id_token_claims
    stub.userinfo = {"name": "From UserInfo"}
    assert _login(client) == 302
    assert stub.userinfo_calls == calls


def test_the_name_follows_the_provider_unless_the_person_set_it(
    client: FlaskClient, db: Session, stub: StubIdP, stub_provider: IdentityProvider
) -> None:
    stub.userinfo = {}  # first login: no name at all, so the subject stands in
    assert _login(client) == 302
    uid = logged_in_user_id(client)
    assert db.get(User, uid).display_name == "stub-user"  # type: ignore[union-attr]
    stub.userinfo = {"name": "Ada Lovelace"}
    assert _login(client) == 302
    db.expire_all()
    assert db.get(User, uid).display_name == "Ada Lovelace"  # type: ignore[union-attr]
    assert client.post("/auth/account/name", data={"name": "Countess Ada"}).status_code == 302
    stub.userinfo = {"name": "A. Lovelace"}
    assert _login(client) == 302
    db.expire_all()
    assert db.get(User, uid).display_name == "Countess Ada"  # type: ignore[union-attr]
    # Emptying the field follows the provider again at the next login.
    assert client.post("/auth/account/name", data={"name": ""}).status_code == 302
    assert _login(client) == 302
    db.expire_all()
    assert db.get(User, uid).display_name == "A. Lovelace"  # type: ignore[union-attr]


def test_private_key_jwt_signs_the_token_request_with_the_portals_key(
    app: Flask, client: FlaskClient, db: Session, stub: StubIdP, stub_provider: IdentityProvider
) -> None:
    stub_provider.token_auth_method = TokenAuthMethod.PRIVATE_KEY_JWT
    db.flush()
    assert _login(client) == 302
    sent = stub.last_token_request
    assert "client_secret" not in sent and not sent["authorization"]
    assert sent["client_assertion_type"] == "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"
    with app.app_context():
        keys = KeySet.import_key_set(public_jwks())  # type: ignore[arg-type]
    assertion = jwt.decode(sent["client_assertion"], keys, algorithms=["RS256"])
    assert assertion.claims["iss"] == assertion.claims["sub"] == stub_provider.client_id
    assert assertion.claims["aud"] == f"{stub.base}/token"
    assert client.get("/.well-known/jwks.json").get_json() == public_jwks_of(app)


def public_jwks_of(app: Flask) -> dict[str, object]:
    with app.app_context():
        return public_jwks()


def test_logout_can_end_the_session_at_the_provider_too(
    client: FlaskClient, db: Session, stub: StubIdP, stub_provider: IdentityProvider
) -> None:
    stub_provider.logout_at_provider = True
    db.flush()
    assert _login(client) == 302
    record = db.scalars(select(LoginSession).order_by(LoginSession.id.desc())).first()
    assert record is not None and record.id_token and record.provider_sid == stub.sid
    page = client.post("/auth/logout")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    (link,) = {part.split('"')[0] for part in html.split(f"{stub.base}/logout?")[1:]}
    params = parse_qs(link.replace("&amp;", "&"))
    assert params["id_token_hint"] == [record.id_token]
    assert params["post_logout_redirect_uri"] == ["http://portal.test/"]
    assert params["client_id"] == [stub_provider.client_id]
    assert logged_in_user_id(client) is None


def test_logout_stays_in_the_portal_when_the_provider_is_not_set_up_for_it(
    client: FlaskClient, db: Session, stub: StubIdP, stub_provider: IdentityProvider
) -> None:
    assert _login(client) == 302
    resp = client.post("/auth/logout")
    assert resp.status_code == 302 and urlsplit(resp.headers["Location"]).path == "/"


@pytest.mark.parametrize(
    ("overrides", "ends"),
    [
        ({}, True),
        ({"sid": None, "sub": "stub-user"}, True),
        ({"aud": "someone-else"}, False),
        ({"iss": "https://evil.example"}, False),
        ({"events": None}, False),
        ({"nonce": "n"}, False),
        ({"sid": "another-session"}, False),
    ],
)
def test_back_channel_logout_ends_the_sessions_of_that_provider_session(
    client: FlaskClient,
    db: Session,
    stub: StubIdP,
    stub_provider: IdentityProvider,
    overrides: dict[str, object],
    ends: bool,
) -> None:
    assert _login(client) == 302
    assert logged_in_user_id(client) is not None
    other = client.application.test_client()
    login(other, make_user(db, Role.RESEARCHER))  # someone else's session stays
    token = stub.logout_token(stub_provider.client_id, **overrides)
    resp = client.application.test_client().post(
        "/auth/backchannel-logout/stub", data={"logout_token": token}
    )
    assert resp.headers["Cache-Control"] == "no-store"
    assert (logged_in_user_id(client) is None) == ends
    assert other.get("/dashboard").status_code == 200
    if ends:
        assert resp.status_code == 200
    else:
        assert resp.status_code in (200, 400)  # an unknown sid ends nothing, and is no error


def test_the_admin_page_shows_discovery_and_tests_the_provider(
    client: FlaskClient, db: Session, stub: StubIdP, stub_provider: IdentityProvider
) -> None:
    login(client, make_user(db, Role.ADMIN))
    resp = client.post(f"/auth/admin/providers/{stub_provider.id}/test", follow_redirects=True)
    html = resp.get_data(as_text=True)
    assert "discovery and 1 signing key(s) read; ID tokens signed with RS256" in html
    assert f"{stub.base}/userinfo" in html and "end_session_endpoint" in html
    assert "/auth/backchannel-logout/stub" in html and "/.well-known/jwks.json" in html
    stub_provider.id_token_algs = "ES256"
    db.flush()
    resp = client.post(f"/auth/admin/providers/{stub_provider.id}/test", follow_redirects=True)
    assert "none of them is allowed here (ES256)" in resp.get_data(as_text=True)
