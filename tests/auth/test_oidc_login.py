"""Logging in through real OpenID providers over HTTP: the good path, and every way it must fail."""

from __future__ import annotations

from collections.abc import Iterator
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.auth.models import Identity, IdentityProvider, LoginSession, OAuthLoginState, User
from portal.core.audit import AuditEvent
from tests.auth.stub_idp import StubIdP
from tests.support.oidc import (
    add_provider,
    authorize_at_mock,
    authorize_at_stub,
    logged_in_user_id,
    mock_idp_process,
    oidc_login,
    path_of,
    set_claims,
    start_login,
)


def _failures(db: Session) -> list[str]:
    return [
        e.details.get("reason", "")
        for e in db.scalars(select(AuditEvent).where(AuditEvent.action == "auth.login_failed"))
    ]


def _users(db: Session) -> int:
    return db.scalar(select(func.count()).select_from(User)) or 0


def _assert_refused(client: FlaskClient, db: Session, resp: object, reason: str) -> None:
    assert getattr(resp, "status_code", None) == 400
    assert "The login did not work" in resp.get_data(as_text=True)  # type: ignore[attr-defined]
    assert logged_in_user_id(client) is None
    assert any(r.startswith(reason) for r in _failures(db)), _failures(db)


# --- the good path ---------------------------------------------------------------------------


def test_first_login_creates_a_user_keyed_by_issuer_and_subject(
    client: FlaskClient, db: Session, provider_a: IdentityProvider, idp_a_url: str
) -> None:
    set_claims(
        idp_a_url,
        "alice",
        {"name": "Alice Liddell", "email": "alice@example.org", "email_verified": True},
    )
    resp = oidc_login(client, "idp-a", idp_a_url, "alice")
    assert resp.status_code == 302 and resp.headers["Location"] == "/dashboard"
    ident = db.scalars(select(Identity).where(Identity.subject == "alice")).one()
    assert ident.issuer == idp_a_url == provider_a.issuer
    assert ident.user.display_name == "Alice Liddell"
    assert ident.user.email == "alice@example.org" and ident.user.email_verified
    assert logged_in_user_id(client) == ident.user_id
    assert client.get("/dashboard").status_code == 200
    # A second login is the same person.
    client.post("/auth/logout")
    oidc_login(client, "idp-a", idp_a_url, "alice")
    assert logged_in_user_id(client) == ident.user_id
    assert (
        db.scalar(select(func.count()).select_from(Identity).where(Identity.subject == "alice"))
        == 1
    )


def test_authorization_request_uses_state_nonce_and_pkce_s256(
    client: FlaskClient, provider_a: IdentityProvider
) -> None:
    url = start_login(client, "idp-a")
    q = parse_qs(urlsplit(url).query)
    assert q["response_type"] == ["code"]
    assert q["code_challenge_method"] == ["S256"] and len(q["code_challenge"][0]) >= 43
    assert len(q["state"][0]) >= 20 and len(q["nonce"][0]) >= 20
    assert q["redirect_uri"] == ["http://portal.test/auth/callback/idp-a"]
    assert "openid" in q["scope"][0].split()


def test_each_provider_has_its_own_redirect_uri(
    client: FlaskClient, provider_a: IdentityProvider, provider_b: IdentityProvider
) -> None:
    a = parse_qs(urlsplit(start_login(client, "idp-a")).query)["redirect_uri"]
    b = parse_qs(urlsplit(start_login(client, "idp-b")).query)["redirect_uri"]
    assert a != b and b == ["http://portal.test/auth/callback/idp-b"]


# --- state -------------------------------------------------------------------------------------


def test_forged_state_is_rejected(
    client: FlaskClient, db: Session, provider_a: IdentityProvider, idp_a_url: str
) -> None:
    callback = authorize_at_mock(start_login(client, "idp-a"), "mallory")
    parts = urlsplit(callback)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    q["state"] = "forged-state-value-1234567890"
    resp = client.get(parts.path + "?" + urlencode(q))
    _assert_refused(client, db, resp, "state_mismatch")


def test_replayed_state_is_rejected(
    client: FlaskClient, db: Session, provider_a: IdentityProvider, idp_a_url: str
) -> None:
    set_claims(idp_a_url, "replay", {"email": "r@example.org"})
    callback = authorize_at_mock(start_login(client, "idp-a"), "replay")
    with client.session_transaction() as s:
        binding_cookie = dict(s)
    assert client.get(path_of(callback)).status_code == 302  # used once: logged in
    client.post("/auth/logout")
    # The same callback again, even with the browser binding restored, finds no state.
    with client.session_transaction() as s:
        s.update(binding_cookie)
    _assert_refused(client, db, client.get(path_of(callback)), "state_mismatch")


def test_state_started_in_another_browser_is_rejected(
    app: object, client: FlaskClient, db: Session, provider_a: IdentityProvider
) -> None:
    """Login CSRF: an attacker's own login, finished in the victim's browser, does nothing."""
    callback = authorize_at_mock(start_login(client, "idp-a"), "attacker")
    victim = client.application.test_client()
    _assert_refused(victim, db, victim.get(path_of(callback)), "state_mismatch")


def test_code_from_provider_a_at_provider_b_callback_is_rejected(
    client: FlaskClient,
    db: Session,
    provider_a: IdentityProvider,
    provider_b: IdentityProvider,
) -> None:
    callback = authorize_at_mock(start_login(client, "idp-a"), "alice")
    swapped = path_of(callback).replace("/auth/callback/idp-a", "/auth/callback/idp-b")
    _assert_refused(client, db, client.get(swapped), "state_mismatch")


def test_abandoned_logins_never_grow_the_session_cookie(
    client: FlaskClient, db: Session, provider_a: IdentityProvider
) -> None:
    for _ in range(50):
        start_login(client, "idp-a")
    cookie = client.get_cookie("atom_session", domain="portal.test")
    assert cookie is not None and len(cookie.value) < 4096
    assert len(cookie.value) < 300  # one fixed-size binding value, whatever the number of logins
    assert db.scalar(select(func.count()).select_from(OAuthLoginState)) == 50


# --- ID-token checks ----------------------------------------------------------------------------


def test_wrong_nonce_is_rejected(
    client: FlaskClient, db: Session, provider_a: IdentityProvider
) -> None:
    """The real provider signs whatever nonce it was asked for; here, not ours."""
    url = start_login(client, "idp-a")
    parts = urlsplit(url)
    q = {k: v[0] for k, v in parse_qs(parts.query).items()}
    q["nonce"] = "a-nonce-the-portal-never-issued"
    tampered = urlunsplit(parts._replace(query=urlencode(q)))
    callback = authorize_at_mock(tampered, "alice")
    _assert_refused(
        client,
        db,
        client.get(path_of(callback)),
        "id_token_invalid:InvalidClaimError:invalid_claim: Invalid claim: 'nonce'",
    )


@pytest.fixture(scope="module")
def expiring_idp_url() -> Iterator[str]:
    """A real provider whose ID tokens expired ten minutes before they were issued."""
    with mock_idp_process("--token-max-age", "-600") as url:
        yield url


def test_expired_token_is_rejected(client: FlaskClient, db: Session, expiring_idp_url: str) -> None:
    add_provider(db, "idp-a", expiring_idp_url)
    resp = oidc_login(client, "idp-a", expiring_idp_url, "alice")
    _assert_refused(client, db, resp, "id_token_invalid:ExpiredTokenError")


def _stub_login(client: FlaskClient) -> object:
    return client.get(path_of(authorize_at_stub(start_login(client, "stub"))))


def test_stub_provider_good_token_is_accepted(
    client: FlaskClient, db: Session, stub_provider: IdentityProvider
) -> None:
    """The stub's normal token logs in, so each rejection below is down to its one defect."""
    resp = _stub_login(client)
    assert getattr(resp, "status_code", None) == 302
    assert logged_in_user_id(client) is not None


@pytest.mark.parametrize(
    ("mode", "reason"),
    [
        ("wrong_aud", "id_token_invalid:InvalidClaimError:invalid_claim: Invalid claim: 'aud'"),
        (
            "wrong_aud_with_azp",
            "id_token_invalid:InvalidClaimError:invalid_claim: Invalid claim: 'aud'",
        ),
        ("wrong_iss", "id_token_invalid:InvalidClaimError:invalid_claim: Invalid claim: 'iss'"),
        ("expired", "id_token_invalid:ExpiredTokenError"),
        ("alg_none", "id_token_invalid:UnsupportedAlgorithmError"),
        ("hs256_pubkey", "id_token_invalid:UnsupportedAlgorithmError"),
        ("other_key", "id_token_invalid:BadSignatureError"),
        ("no_id_token", "no_id_token"),
    ],
    ids=[
        "wrong-audience",
        "wrong-audience-with-our-azp",
        "wrong-issuer",
        "expired-by-stub",
        "alg-none",
        "hs256-signed-with-public-key",
        "signed-by-another-key",
        "no-id-token-fails-closed",
    ],
)
def test_bad_id_token_is_rejected(
    client: FlaskClient,
    db: Session,
    stub: StubIdP,
    stub_provider: IdentityProvider,
    mode: str,
    reason: str,
) -> None:
    stub.mode = mode
    users_before = _users(db)
    _assert_refused(client, db, _stub_login(client), reason)
    assert _users(db) == users_before


def test_leeway_is_small_not_authlibs_120_seconds(
    client: FlaskClient, db: Session, stub: StubIdP, stub_provider: IdentityProvider
) -> None:
    import time

    now = int(time.time())
    stub.claims = {"iat": now - 400, "exp": now - 60}  # 60 s past expiry: Authlib would accept it
    _assert_refused(client, db, _stub_login(client), "id_token_invalid:ExpiredTokenError")


def test_code_issued_by_another_real_provider_is_not_redeemed(
    client: FlaskClient, db: Session, idp_a_url: str, idp_b_url: str
) -> None:
    """A code provider B issued is worthless at provider A (the token request fails closed)."""
    add_provider(db, "idp-a", idp_a_url)
    # The registry entry pins issuer A and discovery at A; the code is then redeemed at B by
    # pointing the login at B's authorization endpoint: B's token is signed with B's key.
    url = start_login(client, "idp-a")
    at_b = url.replace(idp_a_url, idp_b_url)
    callback = authorize_at_mock(at_b, "alice")
    _assert_refused(client, db, client.get(path_of(callback)), "token_request_failed")


# --- discovery and the iss parameter ------------------------------------------------------------


def test_discovery_document_with_another_issuer_is_refused(
    client: FlaskClient, db: Session, idp_a_url: str
) -> None:
    """The real provider names its issuer after the host it is reached by: reached as localhost,
    it says http://localhost:…, not the pinned http://127.0.0.1:…"""
    port = urlsplit(idp_a_url).port
    add_provider(
        db,
        "idp-a",
        idp_a_url,
        discovery_url=f"http://localhost:{port}/.well-known/openid-configuration",
    )
    resp = client.post("/auth/login/idp-a", data={"next": ""})
    assert resp.status_code == 400
    assert "misconfigured" in resp.get_data(as_text=True)
    assert "discovery_issuer_mismatch" in _failures(db)
    assert db.scalar(select(func.count()).select_from(OAuthLoginState)) == 0


def test_discovery_issuer_mismatch_from_stub_is_refused(
    client: FlaskClient, db: Session, stub: StubIdP, stub_provider: IdentityProvider
) -> None:
    stub.discovery_issuer = "https://evil.example"
    resp = client.post("/auth/login/stub", data={"next": ""})
    assert resp.status_code == 400 and "discovery_issuer_mismatch" in _failures(db)


def test_rfc9207_iss_parameter_must_name_the_provider(
    client: FlaskClient, db: Session, stub: StubIdP, stub_provider: IdentityProvider
) -> None:
    stub.iss_param = "https://evil.example"
    _assert_refused(client, db, _stub_login(client), "iss_mismatch")


def test_rfc9207_iss_parameter_naming_the_provider_is_accepted(
    client: FlaskClient, db: Session, stub: StubIdP, stub_provider: IdentityProvider
) -> None:
    stub.iss_param = stub.base
    assert getattr(_stub_login(client), "status_code", None) == 302
    assert logged_in_user_id(client) is not None


def test_provider_error_response_is_refused(
    client: FlaskClient, db: Session, provider_a: IdentityProvider
) -> None:
    url = start_login(client, "idp-a")
    state = parse_qs(urlsplit(url).query)["state"][0]
    resp = client.get(f"/auth/callback/idp-a?error=access_denied&state={state}")
    _assert_refused(client, db, resp, "provider_error")


def test_unknown_or_disabled_provider_is_404(
    client: FlaskClient, db: Session, provider_a: IdentityProvider
) -> None:
    assert client.post("/auth/login/nope", data={}).status_code == 404
    provider_a.enabled = False
    db.flush()
    assert client.post("/auth/login/idp-a", data={}).status_code == 404
    assert client.get("/auth/callback/idp-a?code=x&state=y").status_code == 404


# --- accounts: (issuer, subject), never e-mail ---------------------------------------------------


def test_same_subject_at_two_issuers_is_two_people(
    client: FlaskClient,
    db: Session,
    provider_a: IdentityProvider,
    provider_b: IdentityProvider,
    idp_a_url: str,
    idp_b_url: str,
) -> None:
    oidc_login(client, "idp-a", idp_a_url, "jsmith")
    first = logged_in_user_id(client)
    client.post("/auth/logout")
    oidc_login(client, "idp-b", idp_b_url, "jsmith")
    second = logged_in_user_id(client)
    assert first and second and first != second
    issuers = set(db.scalars(select(Identity.issuer).where(Identity.subject == "jsmith")))
    assert issuers == {idp_a_url, idp_b_url}


def test_email_alone_never_links_accounts(
    client: FlaskClient,
    db: Session,
    provider_a: IdentityProvider,
    provider_b: IdentityProvider,
    idp_a_url: str,
    idp_b_url: str,
) -> None:
    same = {"email": "ada@northlake.edu", "email_verified": True, "name": "Ada"}
    set_claims(idp_a_url, "ada-a", same)
    set_claims(idp_b_url, "ada-b", same)
    oidc_login(client, "idp-a", idp_a_url, "ada-a")
    owner = logged_in_user_id(client)
    client.post("/auth/logout")
    oidc_login(client, "idp-b", idp_b_url, "ada-b")
    newcomer = logged_in_user_id(client)
    assert owner and newcomer and owner != newcomer
    owner_user = db.get(User, owner)
    assert owner_user is not None and len(owner_user.identities) == 1


# --- next ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "target",
    [
        "https://elsewhere.example/x",
        "//elsewhere.example",
        "/\\elsewhere.example",
        "javascript:alert(1)",
    ],
)
def test_next_to_another_site_lands_on_a_local_page(
    client: FlaskClient, provider_a: IdentityProvider, idp_a_url: str, target: str
) -> None:
    resp = oidc_login(client, "idp-a", idp_a_url, "alice", next=target)
    assert resp.status_code == 302 and resp.headers["Location"] == "/dashboard"


def test_local_next_is_followed(
    client: FlaskClient, provider_a: IdentityProvider, idp_a_url: str
) -> None:
    resp = oidc_login(client, "idp-a", idp_a_url, "alice", next="/institutions/?q=x")
    assert resp.headers["Location"] == "/institutions/?q=x"


def test_login_page_keeps_only_a_safe_next(
    client: FlaskClient, provider_a: IdentityProvider
) -> None:
    body = client.get("/auth/login?next=https://elsewhere.example").get_data(as_text=True)
    assert "elsewhere" not in body
    body = client.get("/auth/login?next=/institutions/").get_data(as_text=True)
    assert 'value="/institutions/"' in body


def test_login_sessions_are_recorded(
    client: FlaskClient, db: Session, provider_a: IdentityProvider, idp_a_url: str
) -> None:
    oidc_login(client, "idp-a", idp_a_url, "alice")
    uid = logged_in_user_id(client)
    rows = db.scalars(select(LoginSession).where(LoginSession.user_id == uid)).all()
    assert len(rows) == 1 and rows[0].identity_id is not None and rows[0].ended_at is None


def test_rfc9207_iss_parameter_missing_when_promised_is_refused(
    client: FlaskClient, db: Session, stub: StubIdP, stub_provider: IdentityProvider
) -> None:
    stub.advertise_iss = True
    _assert_refused(client, db, _stub_login(client), "iss_missing")


def test_unreachable_provider_fails_with_a_clear_message(client: FlaskClient, db: Session) -> None:
    from tests.support.oidc import free_port

    add_provider(db, "idp-a", f"http://127.0.0.1:{free_port()}")
    resp = client.post("/auth/login/idp-a", data={"next": ""})
    assert resp.status_code == 400
    assert "cannot be reached right now" in resp.get_data(as_text=True)
    assert "discovery_unreachable" in _failures(db)
