"""The ranking: weighted scores and their spread for a two-criterion rubric with weights, the
order, and a fixed number of SQL queries for the review queue, the ranking and the assign page
whatever the number of proposals."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

import pytest
from flask import Flask
from flask.ctx import AppContext
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.auth.models import Role, User
from portal.core.models import utcnow
from portal.proposals.models import Call, Proposal, ProposalState
from portal.reviews import services
from portal.reviews.models import Assignment, AssignmentState, Review, ReviewState
from tests.factories import make_call, make_proposal, make_user
from tests.reviews.review_kit import in_review, write_review
from tests.support.app import login

FEW, MANY = 10, 200


@pytest.fixture
def ctx(app: Flask) -> Callable[[], AppContext]:
    return app.app_context


def test_weighted_scores_spread_and_order(ctx: Callable[[], AppContext], db: Session) -> None:
    # Merit weighs 2, openness 1, both scored 1..5: a score counts as (score - 1) / 4.
    call = make_call(db)
    with ctx():
        top, officer, (a1, a2) = in_review(db, call=call)
        write_review(db, a1, (5, 1))  # (2 * 1 + 1 * 0) / 3 = 66.7
        write_review(db, a2, (4, 2))  # (2 * .75 + 1 * .25) / 3 = 58.3
        low, _, (b1, b2) = in_review(db, call=call, officer=officer)
        write_review(db, b1, (1, 5))  # 33.3
        write_review(db, b2, (2, 4), submit=False)  # a draft does not count
        none, _, _ = in_review(db, call=call, officer=officer)
        assert services.weighted(a1.reviews[0], call) == 66.7
        rows = services.ranking(db, call, [none, low, top])
    assert [r.proposal for r in rows] == [top, low, none]
    assert rows[0].score == 62.5 and rows[0].spread == 4.2 and rows[0].reviews_in == 2
    assert [s for _, s in rows[0].by_reviewer] == [66.7, 58.3]
    assert rows[1].score == 33.3 and rows[1].spread is None and rows[1].reviews_in == 1
    assert rows[2].score is None and rows[2].reviews_wanted == 2


def _fill(db: Session, call: Call, reviewer: User, officer: User, n: int) -> Proposal:
    """``n`` proposals in review, each with an accepted assignment of ``reviewer`` and a
    submitted review."""
    last = None
    for _ in range(n):
        p = make_proposal(db, call=call, state=ProposalState.IN_REVIEW, complete=True)
        a = Assignment(
            proposal_id=p.id, reviewer_id=reviewer.id, due_at=utcnow() + dt.timedelta(days=7),
            assigned_by_id=officer.id, state=AssignmentState.ACCEPTED,
        )  # fmt: skip
        db.add(a)
        db.flush()
        db.add(
            Review(
                assignment_id=a.id, version=1, state=ReviewState.SUBMITTED,
                scores={str(c.id): 3 for c in call.criteria}, comments={},
                to_applicant="x" * 30, confidential="", submitted_at=utcnow(),
            )
        )  # fmt: skip
        db.flush()
        last = p
    assert last is not None
    return last


@pytest.mark.parametrize("page", ["queue", "ranking", "ranking_csv", "assign"])
def test_review_pages_run_a_fixed_number_of_queries(
    app: Flask,
    client: FlaskClient,
    db: Session,
    count_queries: Callable[[Callable[[], object]], int],
    page: str,
) -> None:
    call = make_call(db)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    reviewer = make_user(db, Role.REVIEWER)
    for _ in range(3):  # more reviewers in the pool for the assign page
        make_user(db, Role.REVIEWER)
    last = _fill(db, call, reviewer, officer, FEW)
    path = {
        "queue": "/reviews/",
        "ranking": f"/reviews/calls/{call.id}/ranking",
        "ranking_csv": f"/reviews/calls/{call.id}/ranking?format=csv",
        "assign": f"/reviews/proposals/{last.id}/assign",
    }[page]
    login(client, reviewer if page == "queue" else officer)
    assert client.get(path).status_code == 200
    few = count_queries(lambda: client.get(path))
    _fill(db, call, reviewer, officer, MANY - FEW)
    many = count_queries(lambda: client.get(path))
    print(f"{path}: {few} queries at {FEW} proposals, {many} at {MANY}")
    assert many == few


@pytest.mark.once
def test_the_call_page_links_to_its_ranking_for_those_who_may_see_it(
    client: FlaskClient, db: Session
) -> None:
    call = make_call(db)
    link = f'href="/reviews/calls/{call.id}/ranking"'
    login(client, make_user(db, Role.PROGRAM_OFFICER))
    assert link in client.get(f"/calls/{call.id}").get_data(as_text=True)
    login(client, make_user(db, Role.RESEARCHER))
    page = client.get(f"/calls/{call.id}")
    assert page.status_code == 200 and link not in page.get_data(as_text=True)
