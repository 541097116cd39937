"""The outputs pages by every role (the project's PI and program staff record, edit and remove
releases and submit the report; program staff decide it; nobody else sees another project's
outputs), the form's clear refusals (nothing changes), the proposal page's section, the dashboard
card, and a fixed number of SQL queries for the outputs page and the reports list."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.models import Role, User
from portal.core.models import utcnow
from portal.outputs.models import FinalReport, ReleasedOutput, ReportState
from portal.proposals.models import OutputKind, Proposal, TeamRole
from tests.factories import LOGGED_IN, ROLE_NAMES, make_actor, make_institution, make_user
from tests.outputs.factories import SUMMARY, make_project, make_release, make_report
from tests.support.app import login
from tests.support.matrix import Case, case, check_route, matrix_params

#: The route-by-role matrix and rendering: on SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

STAFF = {"officer", "admin"}
#: The PI of {project} (the actor, when a researcher) and program staff.
TEAM = STAFF | {"researcher"}

RELEASE = {
    "kind": "code",
    "title": "Training code",
    "url": "https://github.com/atom-lab/train",
    "license": "Apache-2.0",
    "doi": "https://doi.org/10.5281/zenodo.1234567",
    "released_on": "2026-06-01",
    "planned_output_id": "",
}

# Placeholders: {project} an active project led by the actor when a researcher (else by someone
# at the actor's institution), with a due report; {output} and {gone} its releases; {other} an
# active project of someone else, with a submitted report {submitted} and a release {other_output}.
CASES = [
    case("outputs page", "GET", "/proposals/{project}/outputs", TEAM),
    case("outputs page, searched", "GET", "/proposals/{project}/outputs?q=x&sort=title", TEAM),
    case("another project's outputs", "GET", "/proposals/{other}/outputs", STAFF),
    case("new release form", "GET", "/proposals/{project}/outputs/new", TEAM),
    case("record a release", "POST", "/proposals/{project}/outputs/new", TEAM, 302, RELEASE),
    case(
        "record for another project", "POST", "/proposals/{other}/outputs/new", STAFF, 302, RELEASE
    ),
    case("edit form", "GET", "/outputs/{output}/edit", TEAM),
    case("edit a release", "POST", "/outputs/{output}/edit", TEAM, 302, RELEASE),
    case(
        "edit another project's release",
        "POST",
        "/outputs/{other_output}/edit",
        STAFF,
        302,
        RELEASE,
    ),
    case("remove a release", "POST", "/outputs/{gone}/delete", TEAM, 302),
    case("remove another project's release", "POST", "/outputs/{other_output}/delete", STAFF, 302),
    case("final report", "GET", "/proposals/{project}/report", TEAM),
    case(
        "submit the report",
        "POST",
        "/proposals/{project}/report",
        TEAM,
        302,
        {"summary": SUMMARY, "outcomes": "Two papers."},
    ),
    case("another project's report", "GET", "/proposals/{other}/report", STAFF),
    case("final reports", "GET", "/reports/", LOGGED_IN),
    case("final reports, filtered", "GET", "/reports/?state=submitted&q=x&sort=project", LOGGED_IN),
    case(
        "accept a report", "POST", "/reports/{submitted}/decide", STAFF, 302, {"action": "accept"}
    ),
    case(
        "return a report",
        "POST",
        "/reports/{submitted}/decide",
        STAFF,
        302,
        {"action": "return", "reason": "List the papers."},
    ),
    # Staff are sent back to the report with the reason; nothing changes.
    case(
        "decide on a report not submitted",
        "POST",
        "/reports/{due}/decide",
        STAFF,
        303,
        {"action": "accept"},
        changes=False,
    ),
    case("the proposal page", "GET", "/proposals/{project}", TEAM),
    case("dashboard", "GET", "/dashboard", LOGGED_IN),
]


def world(db: Session, actor: User | None, own_inst: Any) -> dict[str, Any]:
    pi = (
        actor
        if actor is not None and actor.has_role(Role.RESEARCHER)
        else make_user(db, Role.RESEARCHER, institution=own_inst)
    )
    project = make_project(db, pi=pi, planned=[OutputKind.CODE, OutputKind.WEIGHTS])
    due = make_report(db, project, due_on=utcnow().date() + dt.timedelta(days=10))
    other = make_project(db)
    submitted = make_report(db, other, state=ReportState.SUBMITTED)
    return {
        "project": project.id,
        "output": make_release(db, project).id,
        "gone": make_release(db, project).id,
        "other": other.id,
        "other_output": make_release(db, other).id,
        "submitted": submitted.id,
        "due": due.id,
    }


def _snapshot(db: Session) -> list[object]:
    return [
        [
            (o.id, o.title, o.url, o.license, o.doi, o.planned_output_id)
            for o in db.scalars(select(ReleasedOutput).order_by(ReleasedOutput.id))
        ],
        [
            (r.id, r.state, r.summary, r.decision_note)
            for r in db.scalars(select(FinalReport).order_by(FinalReport.id))
        ],
    ]


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("case", matrix_params(CASES))
def test_route_role_matrix(client: FlaskClient, db: Session, role: str, case: Case) -> None:
    own_inst = make_institution(db)
    actor = make_actor(db, role, own_inst)
    values = world(db, actor, own_inst)
    if actor is not None:
        login(client, actor)
    check_route(client, db, role, actor.id if actor else None, case, values, lambda: _snapshot(db))


def _pi(proposal: Proposal) -> User:
    return next(m.user for m in proposal.team if m.role == TeamRole.PI)


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"url": "ftp://example.org/code"}, "web address starting with https://"),
        ({"url": "not a url"}, "A web address has no spaces."),
        ({"license": "Apache-3.0"}, "is not an SPDX licence expression"),
        ({"doi": "doi-1234"}, "A DOI looks like 10.5281/zenodo.1234567"),
        ({"released_on": "2999-01-01"}, "cannot be in the future"),
        ({"planned_output_id": "{foreign}"}, "not one of this project&#39;s"),
        ({"planned_output_id": "{weights}"}, "not code"),
        ({"planned_output_id": "{taken}"}, "Another release already checks off"),
    ],
)
def test_the_form_says_what_is_wrong_and_nothing_changes(
    client: FlaskClient, db: Session, over: dict[str, str], message: str
) -> None:
    project = make_project(db, planned=[OutputKind.CODE, OutputKind.WEIGHTS, OutputKind.CODE])
    make_release(db, project, planned=project.outputs[2])
    ids = {
        "foreign": make_project(db, planned=[OutputKind.CODE]).outputs[0].id,
        "weights": project.outputs[1].id,
        "taken": project.outputs[2].id,
    }
    login(client, _pi(project))
    before = _snapshot(db)
    data = {**RELEASE, **{k: v.format(**ids) for k, v in over.items()}}
    resp = client.post(f"/proposals/{project.id}/outputs/new", data=data)
    assert resp.status_code == 422
    assert message in resp.get_data(as_text=True)
    db.expire_all()
    assert _snapshot(db) == before


def test_the_proposal_page_and_dashboard_show_the_outputs_and_the_report_due(
    client: FlaskClient, db: Session
) -> None:
    project = make_project(db, planned=[OutputKind.CODE, OutputKind.WEIGHTS])
    make_release(db, project, planned=project.outputs[0], title="The training code")
    make_report(db, project, due_on=utcnow().date() + dt.timedelta(days=5))
    login(client, _pi(project))
    page = client.get(f"/proposals/{project.id}").get_data(as_text=True)
    assert "Open outputs" in page and "The training code" in page
    assert "75 % open (1 of 2 planned released; 1 of 1 open licence)" in page
    assert f"/proposals/{project.id}/report" in page
    dashboard = client.get("/dashboard").get_data(as_text=True)
    assert "Final reports due" in dashboard and project.title in dashboard


def test_staff_see_final_reports_in_the_navigation(client: FlaskClient, db: Session) -> None:
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    assert "Final reports" in client.get("/reports/").get_data(as_text=True)


@pytest.mark.parametrize("rows", [10, 200])
def test_the_outputs_page_runs_a_fixed_number_of_queries(
    client: FlaskClient,
    db: Session,
    count_queries: Callable[[Callable[[], object]], int],
    rows: int,
) -> None:
    project = make_project(db, planned=[OutputKind.CODE] * 3)
    for i in range(rows):
        make_release(db, project, planned=project.outputs[i] if i < 3 else None)
    login(client, _pi(project))
    url = f"/proposals/{project.id}/outputs"
    client.get(url)
    seen = count_queries(lambda: client.get(url))
    assert seen == EXPECTED_QUERIES["outputs"], seen


@pytest.mark.parametrize("rows", [10, 200])
def test_the_reports_list_runs_a_fixed_number_of_queries(
    client: FlaskClient,
    db: Session,
    count_queries: Callable[[Callable[[], object]], int],
    rows: int,
) -> None:
    institution = make_institution(db)
    pi = make_user(db, Role.RESEARCHER, institution=institution)
    for i in range(rows):
        project = make_project(db, pi=pi)
        make_report(db, project, state=ReportState.SUBMITTED if i % 2 else ReportState.DUE)
        make_release(db, project, planned=project.outputs[0])
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    client.get("/reports/")
    seen = count_queries(lambda: client.get("/reports/"))
    assert seen == EXPECTED_QUERIES["reports"], seen


#: SQL statements per page, whatever the number of rows.
EXPECTED_QUERIES = {"outputs": 10, "reports": 6}
