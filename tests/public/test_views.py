"""Every public route by every role (anonymous included: the pages are for everyone), and the
consent to be named on them: only the person, logged in, with a CSRF token, audited."""

from __future__ import annotations

import re

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.models import User
from portal.core.audit import AuditEvent
from tests.factories import LOGGED_IN, ROLE_NAMES, make_actor, make_institution
from tests.public.conftest import make_world
from tests.public.pages import main_html
from tests.support.app import login
from tests.support.matrix import Case, case, check_route, matrix_params

#: The route-by-role matrix and rendering: on SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

EVERYONE = ROLE_NAMES

CASES = [
    case("overview", "GET", "/program/", EVERYONE),
    case("partners", "GET", "/program/partners", EVERYONE),
    case("partners filtered", "GET", "/program/partners?q=x&country=DE&sort=since", EVERYONE),
    case("partner", "GET", "/program/institutions/{partner}", EVERYONE),
    case("applicant", "GET", "/program/institutions/{applied}", EVERYONE, 404),
    case("suspended", "GET", "/program/institutions/{suspended}", EVERYONE, 404),
    case("projects", "GET", "/program/projects", EVERYONE),
    case("project", "GET", "/program/projects/{shown}", EVERYONE),
    case("draft", "GET", "/program/projects/{draft}", EVERYONE, 404),
    case("declined", "GET", "/program/projects/{declined}", EVERYONE, 404),
    case("calls", "GET", "/program/calls", EVERYONE),
    case("account page", "GET", "/auth/account", LOGGED_IN),
    case("consent", "POST", "/auth/account/public-name", LOGGED_IN, 302, {"public_name": "y"}),
]


def _consents(db: Session) -> list[tuple[int, bool]]:
    return [(u.id, u.public_name) for u in db.scalars(select(User).order_by(User.id))]


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("case", matrix_params(CASES))
def test_route_role_matrix(client: FlaskClient, db: Session, role: str, case: Case) -> None:
    world = make_world(db)
    actor = make_actor(db, role, make_institution(db))
    if actor is not None:
        login(client, actor)
    check_route(
        client,
        db,
        role,
        actor.id if actor else None,
        case,
        {
            "partner": world.partner.id,
            "applied": world.applied.id,
            "suspended": world.suspended.id,
            "shown": world.shown.id,
            "draft": world.hidden["draft"].id,
            "declined": world.hidden["declined"].id,
        },
        lambda: _consents(db),
    )


def _content(client: FlaskClient, path: str) -> str:
    return main_html(client.get(path).get_data(as_text=True))


def _checkbox(body: str) -> str:
    match = re.search(r'<input[^>]*name="public_name"[^>]*>', body)
    assert match, "no consent checkbox on the account page"
    return match.group(0)


def test_the_account_page_offers_the_consent_and_shows_the_answer(
    client: FlaskClient, db: Session
) -> None:
    world = make_world(db)
    login(client, world.private_pi)
    body = client.get("/auth/account").get_data(as_text=True)
    assert (
        "Show my name on the program's public pages (as principal investigator of an awarded "
        "project)" in body.replace("&#39;", "'")
    )
    assert "checked" not in _checkbox(body)
    assert 'action="/auth/account/public-name"' in body


def test_consenting_names_the_pi_publicly_and_withdrawing_unnames_them(
    client: FlaskClient, db: Session
) -> None:
    world = make_world(db)
    pi = world.private_pi
    assert "Bob Private" not in client.get("/program/projects").get_data(as_text=True)
    login(client, pi)
    resp = client.post("/auth/account/public-name", data={"public_name": "y"})
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/auth/account")
    db.refresh(pi)
    assert pi.public_name
    event = db.scalars(
        select(AuditEvent).where(AuditEvent.action == "user.public_name").order_by(AuditEvent.id)
    ).all()[-1]
    assert (event.actor_id, event.object_id, event.details) == (pi.id, pi.id, {"consent": True})
    assert "checked" in _checkbox(client.get("/auth/account").get_data(as_text=True))
    assert "Bob Private" in _content(client, "/program/projects")
    assert "Bob Private" in _content(client, f"/program/projects/{world.unnamed.id}")
    # An unticked box (absent from the form) withdraws it.
    client.post("/auth/account/public-name", data={})
    db.refresh(pi)
    assert not pi.public_name
    assert "Bob Private" not in _content(client, "/program/projects")


def test_the_same_answer_again_changes_and_records_nothing(
    client: FlaskClient, db: Session
) -> None:
    world = make_world(db)
    login(client, world.consenting_pi)
    before = len(db.scalars(select(AuditEvent)).all())
    resp = client.post("/auth/account/public-name", data={"public_name": "y"})
    assert resp.status_code == 302
    assert len(db.scalars(select(AuditEvent)).all()) == before


@pytest.mark.usefixtures("csrf_enabled")
def test_the_consent_needs_a_csrf_token(client: FlaskClient, db: Session) -> None:
    world = make_world(db)
    login(client, world.private_pi)
    resp = client.post("/auth/account/public-name", data={"public_name": "y"})
    assert resp.status_code == 400 and "Reload the page" in resp.get_data(as_text=True)
    db.refresh(world.private_pi)
    assert not world.private_pi.public_name
    # With the token from the account page, it works.
    body = client.get("/auth/account").get_data(as_text=True)
    forms = re.findall(
        r'<form method="post" action="/auth/account/public-name">.*?</form>', body, re.S
    )
    token = re.search(r'name="csrf_token" value="([^"]+)"', forms[0])
    assert token is not None
    resp = client.post(
        "/auth/account/public-name", data={"public_name": "y", "csrf_token": token.group(1)}
    )
    assert resp.status_code == 302
    db.refresh(world.private_pi)
    assert world.private_pi.public_name
