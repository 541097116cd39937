"""Every institution route by every role, objects of other institutions (IDOR), and bad input."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.institutions.domains import LOOKUP_EXTENSION
from portal.institutions.models import DomainState, Institution, InstitutionDomain, InstitutionState
from tests.factories import (
    LOGGED_IN,
    ROLE_NAMES,
    make_actor,
    make_domain,
    make_institution,
    make_user,
)
from tests.support.app import login
from tests.support.matrix import Case, case, check_route, matrix_params

#: The route-by-role matrix and rendering: on SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

STAFF = {"officer", "admin"}

# Path placeholders: {own} the actor's own institution (applied), {other} another applied one,
# {partner} a partner institution of someone else; {own_pending} / {other_pending} a pending e-mail
# domain of {own} / {other} (a stand-in DNS answers with its token), {own_verified} a verified one.
CASES = [
    case("directory", "GET", "/institutions/", LOGGED_IN),
    case("partner page", "GET", "/institutions/{partner}", LOGGED_IN),
    case("own applied page", "GET", "/institutions/{own}", LOGGED_IN - {"reviewer", "steward"}),
    case("other applied page", "GET", "/institutions/{other}", STAFF),
    case("register form", "GET", "/institutions/new", STAFF),
    case("register", "POST", "/institutions/new", STAFF, 302, {"name": "New U", "country": "FR"}),
    case("edit own form", "GET", "/institutions/{own}/edit", STAFF | {"official"}),
    case("edit other form", "GET", "/institutions/{other}/edit", STAFF),
    case(
        "edit partner",
        "POST",
        "/institutions/{partner}/edit",
        STAFF,
        302,
        {"name": "Renamed", "country": "US", "ror_id": "042nb2s44"},
    ),
    case(
        "start review of own",
        "POST",
        "/institutions/{own}/transition",
        STAFF,
        302,
        {"action": "start_review"},
    ),
    case(
        "withdraw own",
        "POST",
        "/institutions/{own}/transition",
        STAFF | {"official"},
        302,
        {"action": "withdraw", "reason": "x"},
    ),
    case(
        "withdraw other",
        "POST",
        "/institutions/{other}/transition",
        STAFF,
        302,
        {"action": "withdraw", "reason": "x"},
    ),
    case(
        "suspend partner",
        "POST",
        "/institutions/{partner}/transition",
        STAFF,
        302,
        {"action": "suspend", "reason": "x"},
    ),
    case(
        "check DNS of own domain",
        "POST",
        "/institutions/{own}/domains/{own_pending}/check",
        STAFF | {"official"},
        302,
    ),
    case(
        "check DNS of other's domain",
        "POST",
        "/institutions/{other}/domains/{other_pending}/check",
        STAFF,
        302,
    ),
    case(
        "staff verify own domain",
        "POST",
        "/institutions/{own}/domains/{own_pending}/verify",
        STAFF,
        302,
    ),
    case(
        "remove own domain",
        "POST",
        "/institutions/{own}/domains/{own_verified}/remove",
        STAFF | {"official"},
        302,
    ),
    case(
        "remove other's domain",
        "POST",
        "/institutions/{other}/domains/{other_pending}/remove",
        STAFF,
        302,
    ),
    case(
        "other's domain under own institution (IDOR)",
        "POST",
        "/institutions/{own}/domains/{other_pending}/remove",
        set(),
    ),
    case("dashboard", "GET", "/dashboard", LOGGED_IN),
    case("audit log", "GET", "/admin/audit", {"admin"}),
]


def _institutions(db: Session) -> list[tuple[object, ...]]:
    return [
        (i.id, i.name, i.state, i.ror_id, [(d.domain, d.state) for d in i.all_domains])
        for i in db.scalars(select(Institution).order_by(Institution.id))
    ]


def _pending(db: Session, inst: Institution, domain: str) -> InstitutionDomain:
    claim = make_domain(domain, state=DomainState.PENDING)
    inst.all_domains.append(claim)
    db.flush()
    return claim


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("case", matrix_params(CASES))
def test_route_role_matrix(
    app: Flask,
    client: FlaskClient,
    db: Session,
    monkeypatch: pytest.MonkeyPatch,
    role: str,
    case: Case,
) -> None:
    own = make_institution(db, state=InstitutionState.APPLIED)
    other = make_institution(db, state=InstitutionState.APPLIED)
    partner = make_institution(db, state=InstitutionState.PARTNER)
    own_pending = _pending(db, own, f"pending-{own.id}.edu")
    other_pending = _pending(db, other, f"pending-{other.id}.edu")
    records = {d.txt_name: [d.txt_value] for d in (own_pending, other_pending)}
    monkeypatch.setitem(app.extensions, LOOKUP_EXTENSION, lambda name: records.get(name, []))
    actor = make_actor(db, role, own)
    if actor is not None:
        login(client, actor)
    check_route(
        client,
        db,
        role,
        actor.id if actor else None,
        case,
        {
            "own": own.id,
            "other": other.id,
            "partner": partner.id,
            "own_pending": own_pending.id,
            "other_pending": other_pending.id,
            "own_verified": own.domains[0].id,
        },
        lambda: _institutions(db),
    )


def test_directory_lists_only_what_the_detail_page_would_show(
    client: FlaskClient, db: Session
) -> None:
    mine = make_institution(db, state=InstitutionState.APPLIED, name="Mine Applied")
    make_institution(db, state=InstitutionState.APPLIED, name="Hidden Applied")
    make_institution(db, state=InstitutionState.PARTNER, name="Open Partner")
    login(client, make_user(db, Role.SIGNING_OFFICIAL, institution=mine))
    html = client.get("/institutions/?per_page=100").get_data(as_text=True)
    assert "Mine Applied" in html and "Open Partner" in html
    assert "Hidden Applied" not in html


def test_directory_search_by_name_and_domain(client: FlaskClient, db: Session) -> None:
    a = make_institution(db, name="Alpha Institute of Technology")
    make_institution(db, name="Beta College")
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    html = client.get("/institutions/?q=alpha").get_data(as_text=True)
    assert "Alpha Institute" in html and "Beta College" not in html
    html = client.get(f"/institutions/?q={a.domains[0].domain}").get_data(as_text=True)
    assert "Alpha Institute" in html and "Beta College" not in html
    assert client.get("/institutions/?state=bogus&page=-3&per_page=x").status_code == 200


def test_register_shows_errors_and_changes_nothing_on_bad_input(
    client: FlaskClient, db: Session
) -> None:
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    before = db.scalar(select(func.count()).select_from(Institution))
    resp = client.post("/institutions/new", data={"name": "", "country": "USA", "ror_id": "nope"})
    assert resp.status_code == 422
    html = resp.get_data(as_text=True)
    assert "This field is required" in html and "two-letter ISO code" in html
    resp = client.post(
        "/institutions/new", data={"name": "X", "country": "US", "ror_id": "042nb2s45"}
    )
    assert resp.status_code == 422 and "is not a ROR id" in resp.get_data(as_text=True)
    assert db.scalar(select(func.count()).select_from(Institution)) == before


def test_invalid_transition_is_explained_not_applied(client: FlaskClient, db: Session) -> None:
    inst = make_institution(db, state=InstitutionState.APPLIED)
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    resp = client.post(
        f"/institutions/{inst.id}/transition", data={"action": "approve"}, follow_redirects=True
    )
    assert "not possible while the institution is applied" in resp.get_data(as_text=True)
    assert inst.state == InstitutionState.APPLIED
    resp = client.post(
        f"/institutions/{inst.id}/transition", data={"action": "explode"}, follow_redirects=True
    )
    assert "Unknown action" in resp.get_data(as_text=True)


@pytest.mark.usefixtures("csrf_enabled")
def test_posts_without_a_csrf_token_are_refused(client: FlaskClient, db: Session) -> None:
    inst = make_institution(db, state=InstitutionState.APPLIED)
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    resp = client.post(f"/institutions/{inst.id}/transition", data={"action": "start_review"})
    assert resp.status_code == 400 and "Reload the page" in resp.get_data(as_text=True)
    assert inst.state == InstitutionState.APPLIED


def test_missing_institution_is_404(client: FlaskClient, db: Session) -> None:
    login(client, make_user(db, Role.ADMIN))
    assert client.get("/institutions/987654").status_code == 404


def test_list_pages_use_a_bounded_number_of_queries(
    client: FlaskClient, db: Session, count_queries: Callable[[Callable[[], object]], int]
) -> None:
    login(client, make_user(db, Role.ADMIN))
    for _ in range(3):
        make_institution(db)
    few = count_queries(lambda: client.get("/institutions/"))
    for _ in range(20):
        make_institution(db)
    many = count_queries(lambda: client.get("/institutions/"))
    assert many == few


# --- Vetted details and domain proof (security report, item 1) ------------------------------------


def _partner_with_official(db: Session) -> tuple[Institution, User]:
    inst = make_institution(db, state=InstitutionState.PARTNER, name="Northlake University")
    return inst, make_user(db, Role.SIGNING_OFFICIAL, institution=inst)


def _form(inst: Institution, **changes: str) -> dict[str, str]:
    data = {
        "name": inst.name,
        "country": inst.country,
        "ror_id": inst.ror_id or "",
        "short_name": inst.short_name or "",
        "website": inst.website or "",
        "email_domains": "\n".join(d.domain for d in inst.all_domains),
    }
    return {**data, **changes}


VETTED_CHANGES = [{"name": "Massachusetts Institute of Technology"}, {"ror_id": "042nb2s44"}]


@pytest.mark.parametrize(
    "change", [*VETTED_CHANGES, {"country": "GB"}], ids=lambda c: next(iter(c))
)
def test_official_cannot_rewrite_vetted_details_over_http(
    client: FlaskClient, db: Session, change: dict[str, str]
) -> None:
    inst, official = _partner_with_official(db)
    before = (inst.name, inst.ror_id, inst.country)
    login(client, official)
    resp = client.post(f"/institutions/{inst.id}/edit", data=_form(inst, **change))
    assert resp.status_code == 403
    assert "only program staff change them" in resp.get_data(as_text=True)
    db.expire_all()
    assert (inst.name, inst.ror_id, inst.country) == before
    refusal = db.scalars(
        select(AuditEvent)
        .where(AuditEvent.action == "permission.denied")
        .order_by(AuditEvent.id.desc())
    ).first()
    assert refusal is not None and refusal.actor_id == official.id


@pytest.mark.parametrize("change", VETTED_CHANGES, ids=lambda c: next(iter(c)))
def test_program_staff_change_vetted_details_over_http(
    client: FlaskClient, db: Session, change: dict[str, str]
) -> None:
    inst, _ = _partner_with_official(db)
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    resp = client.post(f"/institutions/{inst.id}/edit", data=_form(inst, **change))
    assert resp.status_code == 302, resp.get_data(as_text=True)
    db.expire_all()
    expected = {
        "name": "Massachusetts Institute of Technology",
        "ror_id": "https://ror.org/042nb2s44",
    }
    key = next(iter(change))
    assert getattr(inst, key) == expected[key]


def test_official_sees_vetted_fields_read_only_and_edits_the_rest(
    client: FlaskClient, db: Session
) -> None:
    inst, official = _partner_with_official(db)
    login(client, official)
    html = client.get(f"/institutions/{inst.id}/edit").get_data(as_text=True)
    assert "changes go through program staff" in html
    assert html.count("readonly") == 3
    resp = client.post(f"/institutions/{inst.id}/edit", data=_form(inst, short_name="NLU"))
    assert resp.status_code == 302
    db.expire_all()
    assert inst.short_name == "NLU" and inst.name == "Northlake University"


def test_webmail_domain_is_a_form_error_naming_it(client: FlaskClient, db: Session) -> None:
    inst, official = _partner_with_official(db)
    login(client, official)
    data = _form(inst, email_domains=f"{inst.domains[0].domain}\ngmail.com")
    resp = client.post(f"/institutions/{inst.id}/edit", data=data)
    assert resp.status_code == 422
    assert "gmail.com: public webmail domains belong to no institution" in resp.get_data(
        as_text=True
    )
    db.expire_all()
    assert [d.domain for d in inst.all_domains] == [inst.domains[0].domain]


def test_new_domain_shows_its_txt_record_and_dns_check_verifies_it(
    app: Flask, client: FlaskClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    inst, official = _partner_with_official(db)
    login(client, official)
    data = _form(inst, email_domains=f"{inst.domains[0].domain}\nnorthlake-health.org")
    assert client.post(f"/institutions/{inst.id}/edit", data=data).status_code == 302
    db.expire_all()
    (claim,) = [d for d in inst.all_domains if d.domain == "northlake-health.org"]
    assert claim.state == DomainState.PENDING
    html = client.get(f"/institutions/{inst.id}").get_data(as_text=True)
    assert "_atom-portal.northlake-health.org" in html
    assert f"atom-portal-verification={claim.token}" in html
    assert "Check DNS now" in html and "Verify (staff)" not in html

    url = f"/institutions/{inst.id}/domains/{claim.id}/check"
    monkeypatch.setitem(app.extensions, LOOKUP_EXTENSION, lambda name: ["something else"])
    html = client.post(url, follow_redirects=True).get_data(as_text=True)
    assert "No TXT record" in html
    db.expire_all()
    assert claim.state == DomainState.PENDING

    monkeypatch.setitem(app.extensions, LOOKUP_EXTENSION, lambda name: [claim.txt_value])
    html = client.post(url, follow_redirects=True).get_data(as_text=True)
    assert "northlake-health.org is verified" in html
    db.expire_all()
    assert claim.state == DomainState.VERIFIED


def test_dns_check_with_an_unreachable_nameserver_is_explained(
    app: Flask, client: FlaskClient, db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real dnspython path, configured (``DNS_NAMESERVERS``) to a port nothing listens on."""
    import socket

    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setitem(app.config, "DNS_NAMESERVERS", [f"127.0.0.1:{port}"])
    monkeypatch.setitem(app.config, "DNS_TIMEOUT_SECONDS", 1)
    inst, official = _partner_with_official(db)
    claim = make_domain("northlake-health.org", state=DomainState.PENDING)
    inst.all_domains.append(claim)
    db.flush()
    login(client, official)
    resp = client.post(f"/institutions/{inst.id}/domains/{claim.id}/check", follow_redirects=True)
    assert "DNS could not be checked for northlake-health.org" in resp.get_data(as_text=True)
    db.expire_all()
    assert claim.state == DomainState.PENDING
