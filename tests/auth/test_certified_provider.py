"""Logging in through a certified OpenID Provider, node-oidc-provider in its specification-conformant
defaults (PKCE required, RFC 9207 ``iss``, ID tokens with the specification's claims only: e-mail,
name and affiliation come from UserInfo alone) — a second, independent provider beside
oidc-provider-mock. Started as a real process (tests/node_idp/, tests/support/node_idp.py)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.keys import public_jwks
from portal.auth.models import IdentityProvider, ProviderInstitution, TokenAuthMethod, User
from portal.core.audit import AuditEvent
from portal.institutions.models import AffiliationState
from tests.factories import make_domain, make_institution
from tests.support.node_idp import (
    CLIENT_SECRET,
    NodeIdP,
    login_at_node_idp,
    logout_at_node_idp,
    node_idp,
    standard_clients,
)
from tests.support.oidc import add_provider, logged_in_user_id, path_of, start_login

SLUGS = ("secret-basic", "secret-post", "signed-userinfo", "private-key-jwt")
ACCOUNTS: dict[str, dict[str, Any]] = {
    "ada.certified": {
        "email": "ada@certified-uni.edu",
        "email_verified": True,
        "name": "Ada Certified",
        "given_name": "Ada",
        "family_name": "Certified",
    },
    "mallory": {"email": "mallory@certified-uni.edu", "email_verified": True, "name": "Mallory"},
}


@pytest.fixture(scope="module")
def certified(app: Flask) -> Iterator[NodeIdP]:
    with app.app_context():
        jwks = public_jwks()
    clients = standard_clients(
        [f"http://portal.test/auth/callback/{slug}" for slug in SLUGS],
        post_logout_redirect_uris=["http://portal.test/"],
        jwks=jwks,
    )
    with node_idp(
        ACCOUNTS, clients, consent="skip", userinfo_sub_override={"mallory": "somebody-else"}
    ) as idp:
        yield idp


@pytest.fixture
def secrets(app: Flask, monkeypatch: pytest.MonkeyPatch) -> None:
    for slug in SLUGS:
        monkeypatch.setitem(app.config["OIDC_CLIENT_SECRETS"], slug, CLIENT_SECRET)


def _provider(db: Session, idp: NodeIdP, slug: str, **fields: Any) -> IdentityProvider:
    provider = add_provider(db, slug, idp.issuer)
    for name, value in fields.items():
        setattr(provider, name, value)
    db.flush()
    return provider


def _login(client: FlaskClient, slug: str, login: str) -> int:
    callback = login_at_node_idp(start_login(client, slug), login)
    assert "iss=" in callback  # RFC 9207: the certified provider names itself
    return client.get(path_of(callback)).status_code


@pytest.mark.parametrize("slug", ["secret-basic", "secret-post", "signed-userinfo"])
def test_claims_only_in_userinfo_give_a_complete_person_with_affiliation(
    client: FlaskClient, db: Session, certified: NodeIdP, secrets: None, slug: str
) -> None:
    inst = make_institution(db, name="Certified University")
    inst.all_domains.append(make_domain("certified-uni.edu"))
    provider = _provider(db, certified, slug)
    provider.served.append(ProviderInstitution(institution=inst))
    db.flush()
    assert _login(client, slug, "ada.certified") == 302
    db.expire_all()
    ada = db.get(User, logged_in_user_id(client))
    assert ada is not None
    assert (ada.display_name, ada.email, ada.email_verified) == (
        "Ada Certified",
        "ada@certified-uni.edu",
        True,
    )
    assert [(a.institution_id, a.state) for a in ada.affiliations] == [
        (inst.id, AffiliationState.ACTIVE)
    ]


def test_a_userinfo_sub_that_is_not_the_id_tokens_is_refused(
    client: FlaskClient, db: Session, certified: NodeIdP, secrets: None
) -> None:
    _provider(db, certified, "secret-basic")
    before = db.scalars(select(User.id)).all()
    assert _login(client, "secret-basic", "mallory") == 400
    assert db.scalars(select(User.id)).all() == before
    reasons = [
        e.details["reason"]
        for e in db.scalars(select(AuditEvent).where(AuditEvent.action == "auth.login_failed"))
    ]
    assert reasons == ["userinfo_sub_mismatch"]


def test_private_key_jwt_logs_in_without_a_secret(
    app: Flask,
    client: FlaskClient,
    db: Session,
    certified: NodeIdP,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(app.config["OIDC_CLIENT_SECRETS"], "private-key-jwt", "not-used")
    _provider(db, certified, "private-key-jwt", token_auth_method=TokenAuthMethod.PRIVATE_KEY_JWT)
    assert _login(client, "private-key-jwt", "ada.certified") == 302
    assert logged_in_user_id(client) is not None


def test_logout_reaches_the_provider_and_comes_back(
    client: FlaskClient, db: Session, certified: NodeIdP, secrets: None
) -> None:
    _provider(db, certified, "secret-basic", logout_at_provider=True)
    browser = requests.Session()  # the provider's side of the same browser
    callback = login_at_node_idp(
        start_login(client, "secret-basic"), "ada.certified", session=browser
    )
    assert client.get(path_of(callback)).status_code == 302
    page = client.post("/auth/logout")
    assert page.status_code == 200 and logged_in_user_id(client) is None
    html = page.get_data(as_text=True)
    end_session = certified.discovery["end_session_endpoint"]
    (link,) = {
        p.split('"')[0].replace("&amp;", "&") for p in html.split(f'href="{end_session}')[1:]
    }
    assert "id_token_hint" in parse_qs(urlsplit(link).query)
    back = logout_at_node_idp(end_session + link, session=browser)
    assert back.startswith("http://portal.test/")
    # The provider's session is over: the next authorization asks for a login again.
    again = browser.get(start_login(client, "secret-basic"), allow_redirects=True)
    assert 'name="login"' in again.text
