"""Every follow-up request route by every role; other institutions' allocations and requests
(IDOR); the forms' refusals; the allocation page's requests section and the deciders' card; and a
supplement from the PI's form to the program officer's approval."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

import pytest
from flask import Flask, render_template_string
from flask.testing import FlaskClient
from flask_login import login_user
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.allocations import followups
from portal.allocations.followup_views import allocation_section
from portal.allocations.models import (
    Allocation,
    AllocationReviewer,
    FollowUpKind,
    FollowUpRequest,
    FollowUpState,
)
from portal.auth.models import Role, User
from portal.proposals.models import TeamRole
from tests.factories import (
    LOGGED_IN,
    ROLE_NAMES,
    make_actor,
    make_institution,
    make_project_allocation,
    make_user,
)
from tests.support.app import login
from tests.support.mail import outbox
from tests.support.matrix import Case, case, check_route, matrix_params

#: The route-by-role matrix and rendering: on SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

STAFF = {"officer", "admin"}
#: Who sees a request about an allocation of a project led by the actor (a researcher) at the
#: actor's institution: its team, the institution's officials, program staff, and the reviewer
#: assigned to decide on its resource.
SEES_OWN = STAFF | {"researcher", "official", "reviewer"}
DECIDES_OWN = STAFF | {"reviewer"}
WHY = {"justification": "Three more seeds for the ablations."}

# Placeholders: {own} an active allocation of a project at the actor's institution (led by the
# actor when a researcher); {waiting} its PI's request for more time, waiting for a decision, which
# the reviewer (when the actor is one) is assigned to decide; {other} an allocation at another
# institution and {other_waiting} its request for more hours; {pool_reviewer} a reviewer in the
# pool, {resource} the own allocation's resource, {assignment} an allocation reviewer's
# assignment on another resource.
CASES = [
    case("ask for more hours", "GET", "/allocations/{own}/requests/supplement", {"researcher"}),
    case("ask for more time", "GET", "/allocations/{own}/requests/extension", {"researcher"}),
    case("ask for a renewal", "GET", "/allocations/{own}/requests/renewal", {"researcher"}),
    case("give hours back", "GET", "/allocations/{own}/requests/return", {"researcher"}),
    case("an unknown kind", "GET", "/allocations/{own}/requests/gift", LOGGED_IN, 404),
    case(
        "ask about another institution's allocation (IDOR)",
        "GET",
        "/allocations/{other}/requests/supplement",
        set(),
    ),
    case(
        "ask about an allocation that does not exist",
        "GET",
        "/allocations/2147483647/requests/supplement",
        set(),
    ),
    case(
        "send a request for more hours",
        "POST",
        "/allocations/{own}/requests/supplement",
        {"researcher"},
        302,
        {"hours": "200", **WHY},
    ),
    case(
        "send a request for a renewal",
        "POST",
        "/allocations/{own}/requests/renewal",
        {"researcher"},
        302,
        {"hours": "500", "months": "6", **WHY},
    ),
    case(
        "give hours back",
        "POST",
        "/allocations/{own}/requests/return",
        {"researcher"},
        302,
        {"hours": "100"},
    ),
    case(
        "send a request about another institution's allocation (IDOR)",
        "POST",
        "/allocations/{other}/requests/supplement",
        set(),
        data={"hours": "200", **WHY},
    ),
    case("a request about the own allocation", "GET", "/allocations/requests/{waiting}", SEES_OWN),
    case(
        "another institution's request (IDOR)",
        "GET",
        "/allocations/requests/{other_waiting}",
        STAFF,
    ),
    case("a request that does not exist", "GET", "/allocations/requests/2147483647", set()),
    case(
        "approve the request",
        "POST",
        "/allocations/requests/{waiting}/decide",
        DECIDES_OWN,
        302,
        {"action": "approve", "reason": "Fits the plan."},
    ),
    case(
        "decline the request",
        "POST",
        "/allocations/requests/{waiting}/decide",
        DECIDES_OWN,
        302,
        {"action": "decline", "reason": "The budget is kept for new projects."},
    ),
    case(
        "approve another institution's request",
        "POST",
        "/allocations/requests/{other_waiting}/decide",
        STAFF,
        302,
        {"action": "approve"},
    ),
    case(
        "withdraw the request",
        "POST",
        "/allocations/requests/{waiting}/withdraw",
        {"researcher"},
        302,
    ),
    case(
        "withdraw another institution's request (IDOR)",
        "POST",
        "/allocations/requests/{other_waiting}/withdraw",
        set(),
    ),
    case("requests to decide", "GET", "/allocations/requests", LOGGED_IN),
    case(
        "requests to decide, searched",
        "GET",
        "/allocations/requests?q=models&sort=newest",
        LOGGED_IN,
    ),
    case("allocation reviewers", "GET", "/allocations/reviewers", STAFF),
    case(
        "assign an allocation reviewer",
        "POST",
        "/allocations/reviewers",
        STAFF,
        302,
        {"user_id": "{pool_reviewer}", "scope": "resource:{resource}", "ceiling_hours": "500"},
    ),
    case("end an assignment", "POST", "/allocations/reviewers/{assignment}/remove", STAFF, 302),
    case("dashboard", "GET", "/dashboard", LOGGED_IN),
]


@pytest.fixture
def allocate(app: Flask, db: Session) -> Callable[..., Allocation]:
    """``allocate(**kw)``: ``make_project_allocation`` in an app context of its own (the mails of
    the approval link to the portal), popped before the test's requests."""

    def make(**kw: Any) -> Allocation:
        with app.app_context():
            return make_project_allocation(db, **kw)

    return make


@pytest.fixture
def in_app(app: Flask) -> Callable[..., Any]:
    """``in_app(fn, *args, **kw)``: a service call in an app context of its own."""

    def run(fn: Callable[..., Any], *args: Any, **kw: Any) -> Any:
        with app.app_context():
            return fn(*args, **kw)

    return run


def pi_of(allocation: Allocation) -> User:
    return next(m.user for m in allocation.proposal.team if m.role == TeamRole.PI)


def _snapshot(db: Session) -> list[object]:
    return [
        [
            (r.id, r.state, r.decided_by_id, r.decision_note)
            for r in db.scalars(select(FollowUpRequest).order_by(FollowUpRequest.id))
        ],
        [
            (a.id, a.state, a.hours, a.ends_on)
            for a in db.scalars(select(Allocation).order_by(Allocation.id))
        ],
        [
            (a.id, a.user_id, a.resource_id, a.call_id, a.ceiling_hours)
            for a in db.scalars(select(AllocationReviewer).order_by(AllocationReviewer.id))
        ],
    ]


@pytest.mark.parametrize("role", ROLE_NAMES)
@pytest.mark.parametrize("case", matrix_params(CASES))
def test_route_role_matrix(
    client: FlaskClient,
    db: Session,
    role: str,
    case: Case,
    allocate: Callable[..., Allocation],
    in_app: Callable[..., Any],
) -> None:
    own_inst = make_institution(db)
    actor = make_actor(db, role, own_inst)
    pi = actor if role == "researcher" else make_user(db, Role.RESEARCHER, institution=own_inst)
    own = allocate(pi=pi)
    other = allocate()
    officer = make_user(db, Role.PROGRAM_OFFICER)
    if role == "reviewer":
        assert actor is not None
        followups.assign_reviewer(db, actor=officer, user=actor, resource=own.resource)
    waiting = in_app(
        followups.submit_request,
        db,
        own,
        FollowUpKind.EXTENSION,
        actor=pi,
        ends_on=followups.latest_extension(own),
        justification="The cluster was down for a month.",
    )
    other_waiting = in_app(
        followups.submit_request,
        db,
        other,
        FollowUpKind.SUPPLEMENT,
        actor=pi_of(other),
        hours=100,
        justification="More seeds.",
    )
    assignment = followups.assign_reviewer(
        db, actor=officer, user=make_user(db, Role.REVIEWER), resource=other.resource
    )
    if actor is not None:
        login(client, actor)
    values: dict[str, Any] = {
        "own": own.id,
        "other": other.id,
        "waiting": waiting.id,
        "other_waiting": other_waiting.id,
        "pool_reviewer": make_user(db, Role.REVIEWER).id,
        "resource": own.resource_id,
        "assignment": assignment.id,
    }
    check_route(client, db, role, actor.id if actor else None, case, values, lambda: _snapshot(db))


# --- IDOR and refusals -------------------------------------------------------------------------


def test_a_reviewer_of_another_resource_or_above_the_ceiling_is_refused(
    client: FlaskClient,
    db: Session,
    allocate: Callable[..., Allocation],
    in_app: Callable[..., Any],
) -> None:
    allocation = allocate()
    officer = make_user(db, Role.PROGRAM_OFFICER)
    capped = make_user(db, Role.REVIEWER)
    elsewhere = make_user(db, Role.REVIEWER)
    followups.assign_reviewer(
        db, actor=officer, user=capped, resource=allocation.resource, ceiling_hours=100
    )
    followups.assign_reviewer(db, actor=officer, user=elsewhere, resource=allocate().resource)
    request = in_app(
        followups.submit_request,
        db,
        allocation,
        FollowUpKind.SUPPLEMENT,
        actor=pi_of(allocation),
        hours=101,
        justification="More seeds.",
    )
    for reviewer in (capped, elsewhere):
        login(client, reviewer)
        assert client.get(f"/allocations/requests/{request.id}").status_code == 403
        resp = client.post(f"/allocations/requests/{request.id}/decide", data={"action": "approve"})
        assert resp.status_code == 403
        queue = client.get("/allocations/requests").get_data(as_text=True)
        assert f"/allocations/requests/{request.id}" not in queue
        assert "Nothing waits for your decision." in queue
    db.expire_all()
    assert request.state == FollowUpState.SUBMITTED


def test_the_pi_of_another_project_at_the_same_institution_is_refused(
    client: FlaskClient,
    db: Session,
    allocate: Callable[..., Allocation],
    in_app: Callable[..., Any],
) -> None:
    allocation = allocate()
    request = in_app(
        followups.submit_request,
        db,
        allocation,
        FollowUpKind.SUPPLEMENT,
        actor=pi_of(allocation),
        hours=10,
        justification="More seeds.",
    )
    neighbour = make_user(db, Role.RESEARCHER, institution=allocation.institution)
    allocate(pi=neighbour)
    login(client, neighbour)
    assert client.get(f"/allocations/{allocation.id}/requests/return").status_code == 403
    assert client.get(f"/allocations/requests/{request.id}").status_code == 403
    assert client.post(f"/allocations/requests/{request.id}/withdraw").status_code == 403
    db.expire_all()
    assert request.state == FollowUpState.SUBMITTED


@pytest.mark.parametrize(
    ("kind", "data", "message"),
    [
        ("supplement", {"hours": "0", **WHY}, "Number must be at least 1"),
        ("supplement", {"hours": "2000", **WHY}, "between 1 and 1,000 GPU-hours"),
        ("supplement", {"hours": "10", "justification": ""}, "This field is required"),
        ("extension", {"ends_on": "2020-01-01", **WHY}, "Choose a new end date after"),
        ("renewal", {"hours": "10", "months": "61", **WHY}, "between 1 and 60"),
        ("return", {"hours": "1000"}, "between 1 and 999 GPU-hours"),
    ],
    ids=["no hours", "too many hours", "no reason", "an earlier end", "too long", "all of it"],
)
def test_a_request_the_rules_refuse_shows_the_form_again_with_the_reason(
    client: FlaskClient,
    db: Session,
    allocate: Callable[..., Allocation],
    kind: str,
    data: dict[str, str],
    message: str,
) -> None:
    allocation = allocate(hours=1000)
    login(client, pi_of(allocation))
    resp = client.post(f"/allocations/{allocation.id}/requests/{kind}", data=data)
    assert resp.status_code == 422
    assert message in resp.get_data(as_text=True)
    assert db.scalars(select(FollowUpRequest)).all() == []


# --- the allocation page's section and the dashboard card --------------------------------------


def _section_html(app: Flask, allocation: Allocation, user: User) -> str:
    """The allocation page's sections as ``page_sections`` draws them for ``user``."""
    with app.test_request_context("/"):
        login_user(user)
        return render_template_string(
            '{% from "_macros.html" import page_sections %}{{ page_sections(a) }}', a=allocation
        )


def test_the_allocation_page_lists_its_requests_and_what_the_pi_may_ask(
    app: Flask, db: Session, allocate: Callable[..., Allocation], in_app: Callable[..., Any]
) -> None:
    allocation = allocate()
    pi = pi_of(allocation)
    request = in_app(
        followups.submit_request,
        db,
        allocation,
        FollowUpKind.SUPPLEMENT,
        actor=pi,
        hours=250,
        justification="More seeds.",
    )
    html = _section_html(app, allocation, pi)
    assert f"/allocations/requests/{request.id}" in html and "250 GPU-hours more" in html
    assert "Waiting for a decision" in html
    # No second request for more hours while one waits; the other kinds are offered.
    assert f"/allocations/{allocation.id}/requests/supplement" not in html
    for kind in ("extension", "renewal", "return"):
        assert f"/allocations/{allocation.id}/requests/{kind}" in html

    official = make_user(db, Role.SIGNING_OFFICIAL, institution=allocation.institution)
    html = _section_html(app, allocation, official)
    assert f"/allocations/requests/{request.id}" in html
    assert "/requests/extension" not in html  # officials see, only the PI and co-PIs ask
    with app.test_request_context("/"):
        assert allocation_section(allocation, make_user(db, Role.RESEARCHER)) is None


def test_a_renewal_links_both_allocations(
    app: Flask, db: Session, allocate: Callable[..., Allocation], in_app: Callable[..., Any]
) -> None:
    allocation = allocate()
    pi = pi_of(allocation)
    request = in_app(
        followups.submit_request,
        db,
        allocation,
        FollowUpKind.RENEWAL,
        actor=pi,
        hours=300,
        months=3,
        justification="Year two.",
    )
    in_app(followups.decide_request, db, request, "approve", actor=make_user(db, Role.ADMIN))
    renewal = request.renewal
    assert renewal is not None
    assert f"/allocations/{renewal.id}" in _section_html(app, allocation, pi)
    assert f"/allocations/{allocation.id}" in _section_html(app, renewal, pi)


def test_deciders_find_their_requests_on_the_dashboard(
    client: FlaskClient,
    db: Session,
    allocate: Callable[..., Allocation],
    in_app: Callable[..., Any],
) -> None:
    allocation = allocate()
    reviewer = make_user(db, Role.REVIEWER)
    followups.assign_reviewer(
        db,
        actor=make_user(db, Role.PROGRAM_OFFICER),
        user=reviewer,
        call=allocation.call_resource.call,
    )
    login(client, reviewer)
    assert "Allocation requests to decide" not in client.get("/dashboard").get_data(as_text=True)
    request = in_app(
        followups.submit_request,
        db,
        allocation,
        FollowUpKind.SUPPLEMENT,
        actor=pi_of(allocation),
        hours=10,
        justification="More seeds.",
    )
    page = client.get("/dashboard").get_data(as_text=True)
    assert "Allocation requests to decide" in page
    assert f"/allocations/requests/{request.id}" in page
    assert "Requests to decide" in page  # the navigation entry


# --- a supplement from the form to the approval ------------------------------------------------


def test_a_pi_asks_for_more_hours_and_a_program_officer_approves_them(
    client: FlaskClient, db: Session, allocate: Callable[..., Allocation]
) -> None:
    allocation = allocate(hours=1000)
    pi = pi_of(allocation)
    officer = make_user(db, Role.PROGRAM_OFFICER)

    login(client, pi)
    form = client.get(f"/allocations/{allocation.id}/requests/supplement").get_data(as_text=True)
    assert 'name="hours"' in form and 'name="justification"' in form
    resp = client.post(
        f"/allocations/{allocation.id}/requests/supplement", data={"hours": "500", **WHY}
    )
    assert resp.status_code == 302
    request = db.scalars(select(FollowUpRequest)).one()
    assert resp.location.endswith(f"/allocations/requests/{request.id}")
    page = client.get(resp.location).get_data(as_text=True)
    assert "Your request was sent" in page and "Withdraw the request" in page
    assert "Approve" not in page
    assert officer.id in {m.recipient_id for m in outbox(db, "allocations/request_submitted")}

    login(client, officer)
    queue = client.get("/allocations/requests").get_data(as_text=True)
    assert f"/allocations/requests/{request.id}" in queue
    page = client.get(f"/allocations/requests/{request.id}").get_data(as_text=True)
    assert re.search(r"\(99,000 left\)", page), "the decider sees what is left of the budget"
    resp = client.post(
        f"/allocations/requests/{request.id}/decide",
        data={"action": "approve", "reason": "Within the plan."},
    )
    assert resp.status_code == 302
    page = client.get(resp.location).get_data(as_text=True)
    assert "Request approved." in page and "Within the plan." in page
    db.expire_all()
    assert allocation.hours == 1500 and allocation.call_resource.allocated_hours == 1500
    (told,) = outbox(db, "allocations/request_decided")
    assert told.recipient_id == pi.id and told.context["hours"] == 1500


def test_a_pi_gives_hours_back_and_sees_them_freed(
    client: FlaskClient, db: Session, allocate: Callable[..., Allocation]
) -> None:
    allocation = allocate(hours=1000)
    login(client, pi_of(allocation))
    page = client.get(f"/allocations/{allocation.id}/requests/return").get_data(as_text=True)
    assert "at most 999 GPU-hours can be given back now" in page
    resp = client.post(
        f"/allocations/{allocation.id}/requests/return",
        data={"hours": "400"},
        follow_redirects=True,
    )
    assert "400 GPU-hours were given back: the allocation now has 600." in resp.get_data(
        as_text=True
    )
    db.expire_all()
    assert allocation.hours == 600 and allocation.call_resource.allocated_hours == 600


def test_assigning_a_reviewer_from_the_page(
    client: FlaskClient, db: Session, allocate: Callable[..., Allocation]
) -> None:
    allocation = allocate()
    officer = make_user(db, Role.PROGRAM_OFFICER)
    reviewer = make_user(db, Role.REVIEWER, display_name="Rosa Reviewer")
    login(client, officer)
    page = client.get("/allocations/reviewers").get_data(as_text=True)
    assert "Rosa Reviewer" in page and f"call:{allocation.call_resource.call_id}" in page
    resp = client.post(
        "/allocations/reviewers",
        data={
            "user_id": str(reviewer.id),
            "scope": f"call:{allocation.call_resource.call_id}",
            "ceiling_hours": "",
        },
        follow_redirects=True,
    )
    assert "Rosa Reviewer decides requests on Call:" in resp.get_data(as_text=True)
    (assignment,) = db.scalars(select(AllocationReviewer)).all()
    assert assignment.call_id == allocation.call_resource.call_id
    assert assignment.ceiling_hours is None

    # Someone outside the pool, or a scope that does not exist, is refused with the reason.
    resp = client.post(
        "/allocations/reviewers",
        data={"user_id": str(reviewer.id), "scope": "resource:2147483647"},
    )
    assert resp.status_code == 422


def test_the_request_page_says_how_each_request_ended(
    client: FlaskClient,
    db: Session,
    allocate: Callable[..., Allocation],
    in_app: Callable[..., Any],
) -> None:
    allocation = allocate()
    pi = pi_of(allocation)
    officer = make_user(db, Role.PROGRAM_OFFICER, display_name="Olga Officer")

    def ask(kind: FollowUpKind, **kw: Any) -> FollowUpRequest:
        request: FollowUpRequest = in_app(
            followups.submit_request,
            db,
            allocation,
            kind,
            actor=pi,
            justification="Year two of the project.",
            **kw,
        )
        return request

    declined = ask(FollowUpKind.SUPPLEMENT, hours=100)
    in_app(followups.decide_request, db, declined, "decline", actor=officer, note="Not this year.")
    withdrawn = ask(FollowUpKind.EXTENSION, ends_on=followups.latest_extension(allocation))
    in_app(followups.withdraw_request, db, withdrawn, actor=pi)
    renewed = ask(FollowUpKind.RENEWAL, hours=300, months=4)
    in_app(followups.decide_request, db, renewed, "approve", actor=officer, note="Reviewed.")
    login(client, pi)

    page = client.get(f"/allocations/requests/{declined.id}").get_data(as_text=True)
    assert "Declined</strong> by Olga Officer" in page and "Not this year." in page
    assert "Withdraw the request" not in page
    page = client.get(f"/allocations/requests/{withdrawn.id}").get_data(as_text=True)
    assert "Withdrawn by the project" in page
    page = client.get(f"/allocations/requests/{renewed.id}").get_data(as_text=True)
    assert renewed.renewal_id is not None
    assert f"/allocations/{renewed.renewal_id}" in page and "Reviewed." in page


def test_the_queue_runs_the_same_queries_for_few_and_many_requests(
    client: FlaskClient,
    db: Session,
    allocate: Callable[..., Allocation],
    in_app: Callable[..., Any],
    count_queries: Callable[[Callable[[], object]], int],
) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    login(client, officer)

    def ask(n: int) -> None:
        for _ in range(n):
            allocation = allocate()
            in_app(
                followups.submit_request,
                db,
                allocation,
                FollowUpKind.SUPPLEMENT,
                actor=pi_of(allocation),
                hours=10,
                justification="More seeds.",
            )

    ask(2)
    client.get("/allocations/requests")  # warm up
    few = count_queries(lambda: client.get("/allocations/requests"))
    ask(10)
    many = count_queries(lambda: client.get("/allocations/requests"))
    assert few == many
    assert (
        client.get("/allocations/requests").get_data(as_text=True).count("/allocations/requests/")
        >= 12
    )
