"""Logging in again before signing: the age of the current login (``login_age``), the login page
shown to someone logged in when asked to log in again (``/auth/login?reauth=1``), the provider
asked to authenticate afresh (``prompt=login``, ``max_age=0``) — and a certified provider really
asking again, a provider that ignored it refused — and a fresh login session afterwards."""

from __future__ import annotations

import base64
import datetime as dt
import json
import time
from collections.abc import Iterator
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session

from portal.auth.models import IdentityProvider, LoginSession, Role, User
from portal.auth.sessions import login_age
from portal.core.audit import AuditEvent
from tests.auth.stub_idp import StubIdP
from tests.factories import make_user
from tests.support.app import login
from tests.support.node_idp import (
    CLIENT_SECRET,
    NodeIdP,
    answer_node_idp_pages,
    login_at_node_idp,
    node_idp,
    standard_clients,
)
from tests.support.oidc import (
    add_provider,
    authorize_at_mock,
    authorize_at_stub,
    logged_in_user_id,
    path_of,
    set_claims,
    start_login,
)

SIGN_PAGE = "/agreements/signatures/7/sign"
NOTICE = "Log in again to confirm it is you before signing"


def _age(client: FlaskClient) -> dt.timedelta | None:
    """``login_age()`` as the next page this browser opens would see it."""
    with client:
        client.get("/")
        return login_age()


def _start(client: FlaskClient, slug: str, *, reauth: bool, next: str = SIGN_PAGE) -> str:
    """Press "Log in" for ``slug`` on the login page (asked to log in again or not); returns the
    provider's authorization URL."""
    data = {"next": next, **({"reauth": "1"} if reauth else {})}
    resp = client.post(f"/auth/login/{slug}", data=data)
    assert resp.status_code == 302, resp.get_data(as_text=True)
    return resp.headers["Location"]


def _query(url: str) -> dict[str, list[str]]:
    return parse_qs(urlsplit(url).query)


def _make_old(db: Session, user_id: int, hours: float = 2) -> None:
    """The user's live login sessions began ``hours`` ago (still within the absolute timeout)."""
    db.execute(
        update(LoginSession)
        .where(LoginSession.user_id == user_id, LoginSession.ended_at.is_(None))
        .values(created_at=dt.datetime.now(dt.UTC) - dt.timedelta(hours=hours))
    )
    db.flush()


def _failures(db: Session) -> list[str]:
    events = db.scalars(select(AuditEvent).where(AuditEvent.action == "auth.login_failed"))
    return [e.details.get("reason", "") for e in events]


# --- login_age ---------------------------------------------------------------------------------


def test_login_age_is_none_without_a_login(client: FlaskClient) -> None:
    assert _age(client) is None


def test_login_age_of_a_fresh_and_of_an_aged_login(client: FlaskClient, db: Session) -> None:
    user = make_user(db, Role.RESEARCHER)
    login(client, user)
    age = _age(client)
    assert age is not None and dt.timedelta(0) <= age < dt.timedelta(minutes=1)

    _make_old(db, user.id, hours=2)
    age = _age(client)
    assert age is not None
    assert dt.timedelta(hours=2) <= age < dt.timedelta(hours=2, minutes=1)

    # Logged out: no age, even though the browser still sends a cookie.
    client.post("/auth/logout")
    assert _age(client) is None


def test_login_age_is_none_once_the_session_timed_out(
    app: Flask, client: FlaskClient, db: Session
) -> None:
    user = make_user(db, Role.RESEARCHER)
    login(client, user)
    _make_old(db, user.id, hours=app.config["SESSION_ABSOLUTE_HOURS"] + 1)
    assert _age(client) is None


# --- the login page ------------------------------------------------------------------------------


def test_asked_to_log_in_again_a_logged_in_user_sees_the_login_page(
    client: FlaskClient, db: Session, provider_a: IdentityProvider
) -> None:
    login(client, make_user(db, Role.RESEARCHER))
    # Without reauth the login page sends a logged-in user on.
    resp = client.get(f"/auth/login?next={SIGN_PAGE}")
    assert resp.status_code == 302 and resp.headers["Location"] == SIGN_PAGE

    resp = client.get(f"/auth/login?reauth=1&next={SIGN_PAGE}")
    assert resp.status_code == 200
    page = resp.get_data(as_text=True)
    assert NOTICE in page
    assert f'name="next" value="{SIGN_PAGE}"' in page
    assert 'name="reauth" value="1"' in page
    assert f'action="/auth/login/{provider_a.slug}"' in page


def test_the_ordinary_login_page_says_nothing_of_logging_in_again(
    client: FlaskClient, provider_a: IdentityProvider
) -> None:
    page = client.get("/auth/login").get_data(as_text=True)
    assert NOTICE not in page and 'name="reauth"' not in page


@pytest.mark.parametrize(
    "target", ["https://evil.example/steal", "//evil.example/x", "/\\evil.example", "javascript:x"]
)
def test_asked_to_log_in_again_next_stays_on_the_site(
    client: FlaskClient, db: Session, provider_a: IdentityProvider, target: str
) -> None:
    login(client, make_user(db, Role.RESEARCHER))
    page = client.get("/auth/login", query_string={"reauth": "1", "next": target})
    text = page.get_data(as_text=True)
    assert page.status_code == 200 and NOTICE in text
    assert 'name="next" value=""' in text and "evil.example" not in text


# --- the provider is asked to authenticate again -----------------------------------------------


def test_logging_in_again_asks_the_provider_for_credentials_again(
    client: FlaskClient, provider_a: IdentityProvider
) -> None:
    ordinary = _query(_start(client, "idp-a", reauth=False))
    assert "prompt" not in ordinary and "max_age" not in ordinary
    again = _query(_start(client, "idp-a", reauth=True))
    assert again["prompt"] == ["login"] and again["max_age"] == ["0"]
    # Everything else about the request is as safe as ever.
    assert again["code_challenge_method"] == ["S256"] and again["nonce"][0]


def test_after_logging_in_again_the_login_is_fresh(
    client: FlaskClient, db: Session, provider_a: IdentityProvider, idp_a_url: str
) -> None:
    set_claims(idp_a_url, "alice", {"name": "Alice Liddell", "email": "alice@example.org"})
    client.get(path_of(authorize_at_mock(start_login(client, "idp-a"), "alice")))
    uid = logged_in_user_id(client)
    assert uid is not None
    _make_old(db, uid, hours=2)
    age = _age(client)
    assert age is not None and age > dt.timedelta(hours=1)
    (old,) = db.scalars(
        select(LoginSession).where(LoginSession.user_id == uid, LoginSession.ended_at.is_(None))
    )

    resp = client.get(path_of(authorize_at_mock(_start(client, "idp-a", reauth=True), "alice")))

    assert resp.status_code == 302 and resp.headers["Location"] == SIGN_PAGE
    assert logged_in_user_id(client) == uid
    age = _age(client)
    assert age is not None and age < dt.timedelta(minutes=1)
    db.refresh(old)
    assert old.end_reason == "replaced" and old.ended_at is not None
    live = db.scalars(
        select(LoginSession).where(LoginSession.user_id == uid, LoginSession.ended_at.is_(None))
    ).all()
    assert len(live) == 1 and live[0].id != old.id


# --- a provider that authenticated again, and one that did not ---------------------------------


def _stub_login(client: FlaskClient, *, reauth: bool) -> Any:
    return client.get(path_of(authorize_at_stub(_start(client, "stub", reauth=reauth))))


def test_an_id_token_authenticated_before_the_request_is_refused(
    client: FlaskClient, db: Session, stub: StubIdP, stub_provider: IdentityProvider
) -> None:
    """``auth_time`` from before the re-login was asked for: the provider reused its session."""
    stub.claims = {"auth_time": int(time.time()) - 3600}
    # An ordinary login does not care when the provider authenticated the person.
    assert _stub_login(client, reauth=False).status_code == 302
    uid = logged_in_user_id(client)
    assert uid is not None
    _make_old(db, uid)

    resp = _stub_login(client, reauth=True)

    assert resp.status_code == 400
    assert "did not ask for your credentials again" in resp.get_data(as_text=True)
    assert _failures(db) == ["reauth_not_fresh"]
    # Still logged in on the old session, whose age has not changed: signing stays closed.
    age = _age(client)
    assert age is not None and age > dt.timedelta(hours=1)


def test_an_id_token_authenticated_after_the_request_is_accepted(
    client: FlaskClient, db: Session, stub: StubIdP, stub_provider: IdentityProvider
) -> None:
    stub.claims = {"auth_time": int(time.time())}
    assert _stub_login(client, reauth=True).status_code == 302
    age = _age(client)
    assert age is not None and age < dt.timedelta(minutes=1)
    assert _failures(db) == []


@pytest.fixture(scope="module")
def certified(app: Flask) -> Iterator[NodeIdP]:
    """node-oidc-provider, which honours ``prompt=login`` and ``max_age`` (and then sends
    ``auth_time``), and skips the consent page so that only a login page can interrupt."""
    accounts = {"ada": {"email": "ada@certified-uni.edu", "email_verified": True, "name": "Ada"}}
    clients = standard_clients(["http://portal.test/auth/callback/secret-basic"])
    with node_idp(accounts, clients, consent="skip") as idp:
        yield idp


def test_a_certified_provider_asks_for_credentials_again(
    app: Flask,
    client: FlaskClient,
    db: Session,
    certified: NodeIdP,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(app.config["OIDC_CLIENT_SECRETS"], "secret-basic", CLIENT_SECRET)
    add_provider(db, "secret-basic", certified.issuer)
    browser = requests.Session()  # the provider's side of the same browser
    callback = login_at_node_idp(
        _start(client, "secret-basic", reauth=False), "ada", session=browser
    )
    assert client.get(path_of(callback)).status_code == 302
    uid = logged_in_user_id(client)
    assert uid is not None and db.get(User, uid) is not None

    # An ordinary login again: the provider's session answers, no page is shown.
    url = _start(client, "secret-basic", reauth=False)
    callback = answer_node_idp_pages(browser, browser.get(url, allow_redirects=False), {})
    assert client.get(path_of(callback)).status_code == 302
    _make_old(db, uid)

    # Asked to log in again, the provider shows its login page despite its session ...
    url = _start(client, "secret-basic", reauth=True)
    page = browser.get(url, timeout=10)  # the provider's redirects end at one of its pages
    assert urlsplit(page.url).path.startswith("/interaction/")
    assert '<input type="hidden" name="prompt" value="login"/>' in page.text
    # ... and once the person has logged in there, the portal's login is fresh.
    asked = int(time.time())
    callback = login_at_node_idp(
        _start(client, "secret-basic", reauth=True), "ada", session=browser
    )
    resp = client.get(path_of(callback))
    assert resp.status_code == 302 and resp.headers["Location"] == SIGN_PAGE
    assert logged_in_user_id(client) == uid
    age = _age(client)
    assert age is not None and age < dt.timedelta(minutes=1)
    assert _failures(db) == []
    # The provider said when it authenticated the person (max_age asks it to): after the request.
    (live,) = db.scalars(
        select(LoginSession).where(LoginSession.user_id == uid, LoginSession.ended_at.is_(None))
    )
    assert live.id_token is not None
    payload = live.id_token.split(".")[1]
    claims = json.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    assert claims["auth_time"] >= asked - 1
