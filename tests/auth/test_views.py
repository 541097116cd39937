"""Every login, account, admin and affiliation route by every role, other people's objects (IDOR),
bad input, CSRF, and audit events for every change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.auth.models import Identity, IdentityProvider, Role, User
from portal.core.audit import AuditEvent
from portal.institutions.models import (
    Affiliation,
    AffiliationState,
    Institution,
)
from tests.factories import (
    LOGGED_IN,
    ROLE_NAMES,
    make_actor,
    make_affiliation,
    make_institution,
    make_user,
)
from tests.support.app import login
from tests.support.matrix import Case, case, check_route, matrix_params
from tests.support.oidc import add_provider

#: The route-by-role matrix and rendering: on SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once


@dataclass
class World:
    own: Institution
    other: Institution
    provider: IdentityProvider
    other_user: User
    disabled_user: User
    other_identity: Identity
    request_own: Affiliation
    request_other: Affiliation

    def ids(self) -> dict[str, Any]:
        return {
            "own": self.own.id,
            "other": self.other.id,
            "provider": self.provider.id,
            "other_user": self.other_user.id,
            "disabled_user": self.disabled_user.id,
            "other_identity": self.other_identity.id,
            "request_own": self.request_own.id,
            "request_other": self.request_other.id,
        }


def _request(db: Session, inst: Institution) -> Affiliation:
    return make_affiliation(db, user=make_user(db), institution=inst)


def _world(db: Session, idp_a_url: str) -> World:
    own, other = make_institution(db), make_institution(db)
    provider = add_provider(db, "idp-a", idp_a_url, served=[(own, None)])
    other_user = make_user(db, Role.RESEARCHER, institution=other)
    for inst in (own, other):  # requests there are decided by their officials, never by staff
        make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    disabled = make_user(db, is_disabled=True)
    return World(
        own=own,
        other=other,
        provider=provider,
        other_user=other_user,
        disabled_user=disabled,
        other_identity=other_user.identities[0],
        request_own=_request(db, own),
        request_other=_request(db, other),
    )


PROVIDER_FORM = {
    "slug": "new-idp",
    "name": "New IdP",
    "kind": "institution",
    "issuer": "https://idp.new.example",
    "client_id": "portal",
    "scopes": "openid email",
    "algorithms": "RS256",
    "enabled": "y",
}

CASES = [
    case(
        "login page",
        "GET",
        "/auth/login",
        ROLE_NAMES,
        statuses=dict.fromkeys(LOGGED_IN, 302),  # already logged in: on to the dashboard
    ),
    case(
        "start login",
        "POST",
        "/auth/login/idp-a",
        ROLE_NAMES,
        302,
        {"next": "/dashboard"},
        changes=False,
    ),
    case(
        "callback with a forged state",
        "GET",
        "/auth/callback/idp-a?code=c&state=forged",
        ROLE_NAMES,
        400,
    ),
    case("account", "GET", "/auth/account", LOGGED_IN),
    case("link identity", "POST", "/auth/link/idp-a", LOGGED_IN, 302, changes=False),
    # Everyone here has a verified address already: refused with a message, nothing sent.
    case(
        "ask for a verification link",
        "POST",
        "/auth/account/verify-email",
        LOGGED_IN,
        303,
        changes=False,
    ),
    case("verification link forged", "GET", "/auth/verify-email/forged.token", LOGGED_IN, 422),
    case(
        "verify with a forged link",
        "POST",
        "/auth/verify-email/forged.token",
        LOGGED_IN,
        303,
        changes=False,
    ),
    case("unlink other's identity", "POST", "/auth/identities/{other_identity}/unlink", ()),
    case("providers", "GET", "/auth/admin/providers", {"admin"}),
    case("new provider form", "GET", "/auth/admin/providers/new", {"admin"}),
    case("new provider", "POST", "/auth/admin/providers/new", {"admin"}, 302, PROVIDER_FORM),
    case("edit provider form", "GET", "/auth/admin/providers/{provider}/edit", {"admin"}),
    case(
        "edit provider",
        "POST",
        "/auth/admin/providers/{provider}/edit",
        {"admin"},
        302,
        {**PROVIDER_FORM, "slug": "idp-a", "issuer": "https://changed.example"},
    ),
    case("users", "GET", "/auth/admin/users", {"admin"}),
    case(
        "disable user",
        "POST",
        "/auth/admin/users/{other_user}/disable",
        {"admin"},
        302,
        {"reason": "left"},
    ),
    case("enable user", "POST", "/auth/admin/users/{disabled_user}/enable", {"admin"}, 302),
    case("affiliations", "GET", "/affiliations/", LOGGED_IN),
    case("request form", "GET", "/affiliations/request", LOGGED_IN),
    case(
        "request to join",
        "POST",
        "/affiliations/request",
        LOGGED_IN,
        302,
        {"institution_id": "{other}", "title": "postdoc"},
    ),
    case(
        "approve request at own institution",
        "POST",
        "/affiliations/{request_own}/decide",
        {"official"},
        302,
        {"decision": "approve"},
    ),
    case(
        "approve request at other institution",
        "POST",
        "/affiliations/{request_other}/decide",
        (),
        data={"decision": "approve"},
    ),
    case(
        "reject request at other institution",
        "POST",
        "/affiliations/{request_other}/decide",
        (),
        data={"decision": "reject", "note": "no"},
    ),
    case("withdraw other's request", "POST", "/affiliations/{request_other}/withdraw", ()),
]


def _snapshot(db: Session) -> tuple[Any, ...]:
    db.expire_all()
    return (
        db.scalar(select(func.count()).select_from(IdentityProvider)),
        tuple(db.scalars(select(IdentityProvider.issuer).order_by(IdentityProvider.id))),
        tuple(db.scalars(select(User.is_disabled).order_by(User.id))),
        db.scalar(select(func.count()).select_from(Identity)),
        tuple(db.scalars(select(Affiliation.state).order_by(Affiliation.id))),
    )


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("case", matrix_params(CASES))
def test_route_role_matrix(
    client: FlaskClient, db: Session, idp_a_url: str, role: str, case: Case
) -> None:
    w = _world(db, idp_a_url)
    actor = make_actor(db, role, w.own)
    if actor is not None:
        login(client, actor)
    check_route(client, db, role, actor.id if actor else None, case, w.ids(), lambda: _snapshot(db))


def test_logout_needs_post_and_works_for_anyone(client: FlaskClient, db: Session) -> None:
    assert client.get("/auth/logout").status_code == 405
    assert client.post("/auth/logout").status_code == 302
    login(client, make_user(db, Role.REVIEWER))
    assert client.post("/auth/logout").status_code == 302
    assert client.get("/dashboard").status_code == 302


# --- bad input changes nothing -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("issuer", "not a url", "must be a full http(s) URL"),
        ("algorithms", "none", "Choose ID-token algorithms"),
        ("algorithms", "HS256", "Choose ID-token algorithms"),
        ("scopes", "email profile", "must include openid"),
        ("slug", "Bad Slug!", "lower-case letters"),
        ("served_text", "https://ror.org/00nvk0a10", "No institution has the ROR id"),
        ("served_text", "not-a-ror", "is not a ROR id"),
        ("client_id", "", "This field is required"),
        ("kind", "magic", "Not a valid choice"),
    ],
)
def test_bad_provider_input_is_refused_with_a_message(
    client: FlaskClient, db: Session, field: str, value: str, message: str
) -> None:
    login(client, make_user(db, Role.ADMIN))
    before = _snapshot(db)
    resp = client.post("/auth/admin/providers/new", data={**PROVIDER_FORM, field: value})
    assert resp.status_code == 422
    assert message in resp.get_data(as_text=True)
    assert _snapshot(db) == before


def test_duplicate_issuer_is_refused(client: FlaskClient, db: Session, idp_a_url: str) -> None:
    add_provider(db, "idp-a", idp_a_url)
    login(client, make_user(db, Role.ADMIN))
    resp = client.post("/auth/admin/providers/new", data={**PROVIDER_FORM, "issuer": idp_a_url})
    assert resp.status_code == 422 and "already has this issuer" in resp.get_data(as_text=True)


def test_client_secret_is_never_shown(
    app: Any, client: FlaskClient, db: Session, idp_a_url: str
) -> None:
    add_provider(db, "idp-a", idp_a_url)
    login(client, make_user(db, Role.ADMIN))
    app.config["OIDC_CLIENT_SECRETS"] = {"idp-a": "s3cr3t-value-xyz"}
    for path in ("/auth/admin/providers", "/auth/admin/providers/new"):
        body = client.get(path).get_data(as_text=True)
        assert "s3cr3t-value-xyz" not in body
    pid = db.scalars(select(IdentityProvider.id)).one()
    body = client.get(f"/auth/admin/providers/{pid}/edit").get_data(as_text=True)
    assert "s3cr3t-value-xyz" not in body and "configured" in body
    assert "PORTAL_OIDC_SECRET_IDP_A" in body


def test_admin_cannot_disable_themselves_or_without_reason(
    client: FlaskClient, db: Session
) -> None:
    admin = make_user(db, Role.ADMIN)
    target = make_user(db)
    login(client, admin)
    assert (
        client.post(f"/auth/admin/users/{admin.id}/disable", data={"reason": "x"}).status_code
        == 403
    )
    resp = client.post(f"/auth/admin/users/{target.id}/disable", data={"reason": ""})
    assert resp.status_code == 303
    assert client.post("/auth/admin/users/999999/disable", data={"reason": "x"}).status_code == 404
    db.expire_all()
    assert not target.is_disabled and not admin.is_disabled


def test_bad_affiliation_input_changes_nothing(client: FlaskClient, db: Session) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    req = _request(db, inst)
    login(client, official)
    before = _snapshot(db)
    # A rejection needs a reason.
    resp = client.post(f"/affiliations/{req.id}/decide", data={"decision": "reject"})
    assert resp.status_code == 303
    # An unknown decision is a bad request.
    assert (
        client.post(f"/affiliations/{req.id}/decide", data={"decision": "maybe"}).status_code == 400
    )
    # An institution that does not exist or takes no requests is not a choice.
    assert (
        client.post("/affiliations/request", data={"institution_id": "999999"}).status_code == 422
    )
    assert client.post("/affiliations/request", data={"institution_id": "abc"}).status_code == 422
    assert (
        client.post("/affiliations/999999/decide", data={"decision": "approve"}).status_code == 404
    )
    assert _snapshot(db) == before
    # Asking again to join where one already belongs is refused with a message.
    resp = client.post("/affiliations/request", data={"institution_id": str(inst.id)})
    assert resp.status_code == 422 and "already have an affiliation" in resp.get_data(as_text=True)
    assert _snapshot(db) == before


POST_ROUTES = [
    ("/auth/logout", {}),
    ("/auth/link/idp-a", {}),
    ("/auth/account/verify-email", {}),
    ("/auth/login/idp-a", {"next": ""}),
    ("/auth/identities/{own_identity}/unlink", {}),
    ("/auth/admin/providers/new", PROVIDER_FORM),
    ("/auth/admin/users/{target}/disable", {"reason": "x"}),
    ("/affiliations/request", {"institution_id": "{inst}"}),
    ("/affiliations/{req}/decide", {"decision": "approve"}),
]


@pytest.mark.parametrize(("template", "data"), POST_ROUTES, ids=[p for p, _ in POST_ROUTES])
def test_every_change_needs_the_csrf_token(
    client: FlaskClient,
    db: Session,
    idp_a_url: str,
    csrf_enabled: None,
    template: str,
    data: dict[str, str],
) -> None:
    inst = make_institution(db)
    add_provider(db, "idp-a", idp_a_url, served=[(inst, None)])
    admin = make_user(db, Role.ADMIN, Role.SIGNING_OFFICIAL, institution=inst)
    admin.identities.append(Identity(issuer="https://x.example", subject="second"))
    db.flush()
    req = _request(db, inst)
    target = make_user(db)
    other_inst = make_institution(db)
    login(client, admin)
    ids = {
        "own_identity": admin.identities[0].id,
        "target": target.id,
        "inst": other_inst.id,
        "req": req.id,
    }
    before = _snapshot(db)
    states_before = db.scalar(select(func.count()).select_from(AuditEvent))
    resp = client.post(template.format(**ids), data={k: v.format(**ids) for k, v in data.items()})
    assert resp.status_code == 400
    assert _snapshot(db) == before
    assert client.get("/dashboard").status_code == 200  # still logged in: logout did not happen
    assert db.scalar(select(func.count()).select_from(AuditEvent)) == states_before


def test_find_your_institution_by_name_or_email_domain(
    client: FlaskClient, db: Session, idp_a_url: str, idp_b_url: str
) -> None:
    north = make_institution(db, name="Northlake University")
    south = make_institution(db, name="Southbay College")
    add_provider(db, "idp-a", idp_a_url, served=[(north, None)])
    add_provider(db, "idp-b", idp_b_url, served=[(south, None)])
    by_name = client.get("/auth/login?q=northlake").get_data(as_text=True)
    assert "Northlake University" in by_name and "Southbay College" not in by_name
    by_email = client.get(f"/auth/login?q=me@{south.domains[0].domain}").get_data(as_text=True)
    assert "Southbay College" in by_email and "Northlake University" not in by_email
    nothing = client.get("/auth/login?q=zzzz").get_data(as_text=True)
    assert "No institution matches" in nothing
    everything = client.get("/auth/login").get_data(as_text=True)
    assert "Provider idp-a" in everything and "Provider idp-b" in everything
    # A tampered last-choice cookie is ignored, not an error.
    client.set_cookie("atom_idp_last", "x", domain="portal.test")
    for value in ("idp-a:99999999999999999999", "nope:1", ":::", "idp-a:" + str(south.id)):
        client.set_cookie("atom_last_idp", value, domain="portal.test")
        resp = client.get("/auth/login")
        assert resp.status_code == 200
        assert "Continue with Southbay" not in resp.get_data(as_text=True)


def test_people_withdraw_their_own_request(client: FlaskClient, db: Session) -> None:
    inst = make_institution(db)
    req = _request(db, inst)
    login(client, req.user)
    assert client.post(f"/affiliations/{req.id}/withdraw").status_code == 302
    db.expire_all()
    assert req.state == AffiliationState.ENDED
    assert db.scalars(select(AuditEvent).where(AuditEvent.action == "affiliation.withdraw")).one()
    # Twice is refused with a message, and changes nothing.
    assert client.post(f"/affiliations/{req.id}/withdraw").status_code == 303


def test_official_sees_and_approves_a_request_on_the_affiliations_page(
    client: FlaskClient, db: Session
) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    req = _request(db, inst)
    other_req = _request(db, make_institution(db))
    login(client, official)
    page = client.get("/affiliations/").get_data(as_text=True)
    assert req.user.display_name in page and other_req.user.display_name not in page
    assert (
        client.post(f"/affiliations/{req.id}/decide", data={"decision": "approve"}).status_code
        == 302
    )
    db.expire_all()
    assert req.state == AffiliationState.ACTIVE and req.user.has_role(Role.RESEARCHER, inst)


def test_affiliations_page_filters_by_status_and_ignores_bad_filters(
    client: FlaskClient, db: Session, count_queries: Any
) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    waiting = [_request(db, inst) for _ in range(3)]
    login(client, official)
    page = client.get("/affiliations/").get_data(as_text=True)
    assert all(r.user.display_name in page for r in waiting)
    assert "Nothing here." in client.get("/affiliations/?state=rejected").get_data(as_text=True)
    assert client.get("/affiliations/?state=%27;drop").status_code == 200
    # The list loads people and institutions in bounded queries, however many requests wait.
    few = count_queries(lambda: client.get("/affiliations/"))
    for _ in range(5):
        _request(db, inst)
    assert count_queries(lambda: client.get("/affiliations/")) == few
