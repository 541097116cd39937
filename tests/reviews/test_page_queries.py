"""A reviewer's pages — the queue, the dashboard card, an assignment — send the same number of SQL
statements however many assignments the reviewer has (conflicted ones among them) and however big
the proposal is: the conflict rule is asked in SQL, with the list's own statement, never per row.
And the queue, filtering in SQL, pages the rows it shows."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable
from typing import Any

import pytest
from flask.testing import FlaskClient
from sqlalchemy import event
from sqlalchemy.orm import Session

from portal.auth.models import Role, User
from portal.core.models import utcnow
from portal.extensions import db as flask_db
from portal.proposals.models import CommitteeMember, Proposal, ProposalState, TeamMember, TeamRole
from portal.reviews.models import Assignment, AssignmentState, DeclaredConflict, Review, ReviewState
from tests.factories import (
    make_assignment,
    make_call,
    make_institution,
    make_proposal,
    make_reviewer,
    make_user,
)
from tests.support.app import login

#: Counting is the same on both databases: SQLite only (``once``, tests/conftest.py).
pytestmark = pytest.mark.once

Count = Callable[[Callable[[], object]], int]

FEW, MANY = 10, 200
#: Rows on a page of a list (portal/config.py).
PAGE_SIZE = 25


def _assign(db: Session, reviewer: User, n: int, *, days: int = 10, **kw: Any) -> list[Proposal]:
    """``n`` proposals in review, each with an accepted assignment of ``reviewer``, due in order
    from ``days`` days on."""
    out = []
    for i in range(n):
        p = make_proposal(db, state=ProposalState.IN_REVIEW, **kw)
        make_assignment(
            db,
            proposal=p,
            reviewer=reviewer,
            state=AssignmentState.ACCEPTED,
            due_at=utcnow() + dt.timedelta(days=days, minutes=i),
        )
        out.append(p)
    return out


def _conflicted(db: Session, reviewer: User, n: int) -> list[Proposal]:
    """``n`` assignments of ``reviewer`` (due first) whose proposals' institution they declared."""
    inst = make_institution(db)
    db.add(DeclaredConflict(reviewer_id=reviewer.id, institution_id=inst.id, reason="My lab"))
    return _assign(db, reviewer, n, days=1, institution=inst)


def _titles(html: str) -> set[str]:
    return set(re.findall(r"Reasoning in open models \d+", html))


def test_the_queue_pages_the_assignments_it_shows_around_conflicts(
    client: FlaskClient, db: Session, count_queries: Count
) -> None:
    reviewer = make_reviewer(db)
    shown = _assign(db, reviewer, PAGE_SIZE + 4)
    hidden = _conflicted(db, reviewer, 6)  # due first: the filter must come before the paging
    login(client, reviewer)
    first = client.get("/reviews/").get_data(as_text=True)
    second = client.get("/reviews/?page=2").get_data(as_text=True)
    assert _titles(first) == {p.title for p in shown[:PAGE_SIZE]}
    assert _titles(second) == {p.title for p in shown[PAGE_SIZE:]}
    assert not (_titles(first) | _titles(second)) & {p.title for p in hidden}
    assert count_queries(lambda: client.get("/reviews/?page=2")) == count_queries(
        lambda: client.get("/reviews/")
    )


@pytest.mark.parametrize("path", ["/reviews/", "/dashboard"])
def test_a_reviewers_lists_send_as_many_statements_for_many_assignments_as_for_few(
    client: FlaskClient, db: Session, count_queries: Count, path: str
) -> None:
    reviewer = make_reviewer(db, institution=make_institution(db))
    _assign(db, reviewer, FEW)
    _conflicted(db, reviewer, 2)
    login(client, reviewer)
    assert client.get(path).status_code == 200
    few = count_queries(lambda: client.get(path))
    _assign(db, reviewer, MANY - FEW)
    _conflicted(db, reviewer, 20)
    many = count_queries(lambda: client.get(path))
    print(f"{path}: {few} statements with {FEW} assignments, {many} with {MANY}")
    assert many == few


def _submitted(db: Session, a: Assignment) -> None:
    db.add(
        Review(
            assignment_id=a.id,
            version=1,
            state=ReviewState.SUBMITTED,
            scores={},
            comments={},
            to_applicant="A clear plan; more on the baselines, please.",
            submitted_at=utcnow(),
        )
    )
    db.flush()


@pytest.mark.parametrize(
    ("who", "page"), [("reviewer", ""), ("officer", ""), ("reviewer", "/review")]
)
def test_an_assignments_pages_send_as_many_statements_for_a_big_proposal_as_for_a_small_one(
    client: FlaskClient, db: Session, count_queries: Count, who: str, page: str
) -> None:
    reviewer = make_reviewer(db, institution=make_institution(db))
    call = make_call(db, resources=3, committee_decides=True)
    proposal = make_proposal(db, call=call, state=ProposalState.IN_REVIEW)
    a = make_assignment(db, proposal=proposal, reviewer=reviewer, state=AssignmentState.ACCEPTED)
    _submitted(db, a)  # the review page then shows the others' reviews
    login(client, reviewer if who == "reviewer" else make_user(db, Role.PROGRAM_OFFICER))
    path = f"/reviews/assignments/{a.id}{page}"
    assert client.get(path).status_code == 200
    few = count_queries(lambda: client.get(path))
    # A team of six at as many institutions, more reviewers with their reviews, a committee,
    # and the reviewer's other assignments and declared conflicts (none with this proposal).
    for _ in range(5):
        member = make_user(db, Role.RESEARCHER, institution=make_institution(db))
        proposal.team.append(TeamMember(user=member, role=TeamRole.MEMBER))
        call.committee.append(CommitteeMember(user=make_user(db, Role.REVIEWER)))
        _submitted(db, make_assignment(db, proposal=proposal, state=AssignmentState.ACCEPTED))
    _assign(db, reviewer, 5)
    _conflicted(db, reviewer, 5)
    db.flush()
    assert client.get(path).status_code == 200
    many = count_queries(lambda: client.get(path))
    print(f"{path} as {who}: {few} statements small, {many} big")
    assert many == few


def test_the_assignment_page_asks_the_conflict_rule_once(client: FlaskClient, db: Session) -> None:
    """The page, its buttons and the navigation all ask whether the reviewer may answer: one
    statement for all of them (it is kept for the rest of the request)."""
    reviewer = make_reviewer(db)
    a = make_assignment(db, reviewer=reviewer)
    login(client, reviewer)
    path = f"/reviews/assignments/{a.id}"
    client.get(path)
    with client.application.app_context():
        engine = flask_db.engine
    statements: list[str] = []

    def seen(conn: object, cursor: object, statement: str, *args: object) -> None:
        statements.append(statement)

    event.listen(engine, "before_cursor_execute", seen)
    try:
        page = client.get(path)
    finally:
        event.remove(engine, "before_cursor_execute", seen)
    assert page.status_code == 200 and "Accept" in page.get_data(as_text=True)
    assert sum("conflict_waivers" in s for s in statements) == 1
