from __future__ import annotations

import pytest
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core import audit
from portal.institutions.models import (
    InstitutionState,
)
from tests.factories import make_affiliation, make_institution, make_user
from tests.support.app import login


def test_start_page_invites_anonymous_visitors(client: FlaskClient, db: Session) -> None:
    make_institution(db)
    html = client.get("/").get_data(as_text=True)
    assert "Open models need open science partners" in html


def test_logged_in_start_page_goes_to_the_dashboard(client: FlaskClient, db: Session) -> None:
    login(client, make_user(db, Role.REVIEWER))
    assert client.get("/").headers["Location"] == "/dashboard"


@pytest.mark.parametrize(
    ("role", "visible", "hidden"),
    [
        (
            Role.RESEARCHER,
            ["Your institutions", "Institutions"],
            ["Audit log", "awaiting a decision"],
        ),
        (Role.PROGRAM_OFFICER, ["Institutions awaiting a decision"], ["Audit log"]),
        (Role.ADMIN, ["Audit log", "Recent activity", "Institutions awaiting a decision"], []),
        (Role.REVIEWER, ["Reviewer"], ["Audit log", "awaiting a decision"]),
    ],
)
def test_navigation_and_dashboard_follow_the_roles(
    client: FlaskClient, db: Session, role: Role, visible: list[str], hidden: list[str]
) -> None:
    make_institution(db, state=InstitutionState.APPLIED, name="Waiting University")
    user = make_user(db, role)
    audit.record(db, "test.event", actor=user)
    login(client, user)
    html = client.get("/dashboard").get_data(as_text=True)
    for text in visible:
        assert text in html, text
    for text in hidden:
        assert text not in html, text


def test_signing_official_sees_pending_affiliation_requests(
    client: FlaskClient, db: Session
) -> None:
    inst = make_institution(db)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=inst)
    applicant = make_user(db, display_name="Nia Newcomer")
    make_affiliation(db, user=applicant, institution=inst)
    login(client, official)
    html = client.get("/dashboard").get_data(as_text=True)
    assert "Affiliation requests awaiting you" in html and "Nia Newcomer" in html


def test_disabled_user_is_logged_out(client: FlaskClient, db: Session) -> None:
    user = make_user(db, Role.ADMIN)
    login(client, user)
    user.is_disabled = True
    db.flush()
    assert client.get("/dashboard").status_code == 302


def test_audit_log_filters_and_pages(client: FlaskClient, db: Session) -> None:
    admin = make_user(db, Role.ADMIN)
    for i in range(30):
        audit.record(db, "thing.happened", actor=admin, n=i)
    audit.record(db, "other.event", actor=admin)
    login(client, admin)
    html = client.get("/admin/audit?q=thing.").get_data(as_text=True)
    assert "thing.happened" in html and "other.event" not in html and "Next" in html
    assert "30 in all" in html


def test_admin_pages_are_grouped_in_one_admin_menu(client: FlaskClient, db: Session) -> None:
    login(client, make_user(db, Role.ADMIN))
    html = client.get("/dashboard").get_data(as_text=True)
    menu = html[html.index(">Admin</a>") :]
    menu = menu[: menu.index("</ul>")]
    for href in ("/admin/audit", "/auth/admin/users"):
        assert f'href="{href}"' in menu


def test_people_without_admin_pages_see_no_admin_menu(client: FlaskClient, db: Session) -> None:
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    assert ">Admin</a>" not in client.get("/dashboard").get_data(as_text=True)
