"""Every institution route by every role, objects of other institutions (IDOR), and bad input."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask.testing import FlaskClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.institutions.models import Institution, InstitutionState
from tests.factories import LOGGED_IN, ROLE_NAMES, make_actor, make_institution, make_user
from tests.support.app import login
from tests.support.matrix import Case, case, check_route, matrix_params

STAFF = {"officer", "admin"}

# Path placeholders: {own} the actor's own institution (applied), {other} another applied one,
# {partner} a partner institution of someone else.
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
    case("dashboard", "GET", "/dashboard", LOGGED_IN),
    case("audit log", "GET", "/admin/audit", {"admin"}),
]


def _institutions(db: Session) -> list[tuple[int, str, InstitutionState, str | None]]:
    return [
        (i.id, i.name, i.state, i.ror_id)
        for i in db.scalars(select(Institution).order_by(Institution.id))
    ]


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("case", matrix_params(CASES))
def test_route_role_matrix(client: FlaskClient, db: Session, role: str, case: Case) -> None:
    own = make_institution(db, state=InstitutionState.APPLIED)
    other = make_institution(db, state=InstitutionState.APPLIED)
    partner = make_institution(db, state=InstitutionState.PARTNER)
    actor = make_actor(db, role, own)
    if actor is not None:
        login(client, actor)
    check_route(
        client,
        db,
        role,
        actor.id if actor else None,
        case,
        {"own": own.id, "other": other.id, "partner": partner.id},
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
