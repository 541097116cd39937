"""Every institution route by every role, objects of other institutions (IDOR), and bad input."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.audit import AuditEvent
from portal.institutions.models import Institution, InstitutionState
from tests.conftest import login
from tests.factories import LOGGED_IN, ROLE_NAMES, make_actor, make_institution, make_user

STAFF = {"officer", "admin"}

# (description, method, path template, form data, roles that succeed, success status)
# Path placeholders: {own} the actor's own institution (applied), {other} another applied one,
# {partner} a partner institution of someone else.
CASES: list[tuple[str, str, str, dict[str, str], set[str], int]] = [
    ("directory", "GET", "/institutions/", {}, LOGGED_IN, 200),
    ("partner page", "GET", "/institutions/{partner}", {}, LOGGED_IN, 200),
    (
        "own applied page",
        "GET",
        "/institutions/{own}",
        {},
        LOGGED_IN - {"reviewer", "steward"},
        200,
    ),
    ("other applied page", "GET", "/institutions/{other}", {}, STAFF, 200),
    ("register form", "GET", "/institutions/new", {}, STAFF, 200),
    ("register", "POST", "/institutions/new", {"name": "New U", "country": "FR"}, STAFF, 302),
    ("edit own form", "GET", "/institutions/{own}/edit", {}, STAFF | {"official"}, 200),
    ("edit other form", "GET", "/institutions/{other}/edit", {}, STAFF, 200),
    (
        "edit partner",
        "POST",
        "/institutions/{partner}/edit",
        {"name": "Renamed", "country": "US", "ror_id": "042nb2s44"},
        STAFF,
        302,
    ),
    (
        "start review of own",
        "POST",
        "/institutions/{own}/transition",
        {"action": "start_review"},
        STAFF,
        302,
    ),
    (
        "withdraw own",
        "POST",
        "/institutions/{own}/transition",
        {"action": "withdraw", "reason": "x"},
        STAFF | {"official"},
        302,
    ),
    (
        "withdraw other",
        "POST",
        "/institutions/{other}/transition",
        {"action": "withdraw", "reason": "x"},
        STAFF,
        302,
    ),
    (
        "suspend partner",
        "POST",
        "/institutions/{partner}/transition",
        {"action": "suspend", "reason": "x"},
        STAFF,
        302,
    ),
    ("dashboard", "GET", "/dashboard", {}, LOGGED_IN, 200),
    ("audit log", "GET", "/admin/audit", {}, {"admin"}, 200),
]


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_route_role_matrix(
    client: FlaskClient,
    db: Session,
    role: str,
    case: tuple[str, str, str, dict[str, str], set[str], int],
) -> None:
    _, method, template, data, allowed, ok_status = case
    own = make_institution(db, state=InstitutionState.APPLIED)
    other = make_institution(db, state=InstitutionState.APPLIED)
    partner = make_institution(db, state=InstitutionState.PARTNER)
    actor = make_actor(db, role, own)
    if actor is not None:
        login(client, actor)
    path = template.format(own=own.id, other=other.id, partner=partner.id)
    states_before = {i.id: i.state for i in (own, other, partner)}
    count_before = db.scalar(select(func.count()).select_from(Institution))
    resp = client.open(path, method=method, data=data)

    if role == "anonymous":
        assert resp.status_code == 302 and resp.headers["Location"].startswith("/auth/login?next=")
    elif role in allowed:
        assert resp.status_code == ok_status, resp.get_data(as_text=True)[:500]
    else:
        assert resp.status_code == 403
        refusal = db.scalars(
            select(AuditEvent)
            .where(AuditEvent.action == "permission.denied")
            .order_by(AuditEvent.id.desc())
        ).first()
        assert (
            refusal is not None and refusal.actor_id == actor.id and refusal.details["path"] == path
        )  # type: ignore[union-attr]
    if role not in allowed:
        db.expire_all()
        assert {i.id: i.state for i in (own, other, partner)} == states_before
        assert db.scalar(select(func.count()).select_from(Institution)) == count_before


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
    assert "not possible while the state is Applied" in resp.get_data(as_text=True)
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
