"""Every (state, action) pair of assignments and reviews, allowed and refused, through the shared
runner; and the declarations of both workflows."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.core.models import utcnow
from portal.core.workflow import Workflow
from portal.reviews import services
from portal.reviews.models import AssignmentState as A
from portal.reviews.models import Review
from portal.reviews.models import ReviewState as R
from portal.reviews.workflow import ASSIGNMENT_WORKFLOW, REVIEW_WORKFLOW
from tests.factories import make_assignment, make_user
from tests.support.workflows import assert_declared, assert_step, every_pair

ASSIGNMENTS = {
    (A.INVITED, "accept"): A.ACCEPTED,
    (A.INVITED, "decline"): A.DECLINED,
    (A.INVITED, "declare_conflict"): A.CONFLICT,
    (A.ACCEPTED, "declare_conflict"): A.CONFLICT,
    (A.INVITED, "remove"): A.REMOVED,
    (A.ACCEPTED, "remove"): A.REMOVED,
}

REVIEWS = {(R.DRAFT, "submit"): R.SUBMITTED}


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    """Steps read the conflict settings and write e-mails to the outbox."""
    with app.app_context():
        yield


@pytest.mark.parametrize("workflow", [ASSIGNMENT_WORKFLOW, REVIEW_WORKFLOW], ids=lambda w: w.name)
def test_workflow_names_the_same_actions_everywhere(workflow: Workflow[Any, Any]) -> None:
    assert_declared(workflow)


@pytest.mark.parametrize(("state", "action"), every_pair(A, ASSIGNMENT_WORKFLOW))
def test_assignment_transition_table(db: Session, state: A, action: str) -> None:
    make_user(db, Role.PROGRAM_OFFICER)  # someone to tell of a decline
    assignment = make_assignment(db, state=state)
    actor = make_user(db, Role.PROGRAM_OFFICER) if action == "remove" else assignment.reviewer
    assert_step(
        db,
        ASSIGNMENT_WORKFLOW,
        assignment,
        action,
        ASSIGNMENTS,
        lambda: services.answer(db, assignment, action, actor=actor, reason="A reason to give"),
    )
    if (state, action) in ASSIGNMENTS:
        assert assignment.decided_at is not None


@pytest.mark.parametrize(("state", "action"), every_pair(R, REVIEW_WORKFLOW))
def test_review_transition_table(db: Session, state: R, action: str) -> None:
    assignment = make_assignment(db, state=A.ACCEPTED)
    criteria = assignment.proposal.call.criteria
    review = Review(
        assignment=assignment,
        version=assignment.proposal.version,
        scores={str(c.id): 3 for c in criteria},
        comments={},
        to_applicant="A clear plan; the evaluation could be broader.",
        state=state,
        submitted_at=utcnow() if state == R.SUBMITTED else None,
    )
    db.add(review)
    db.flush()
    assert_step(
        db,
        REVIEW_WORKFLOW,
        review,
        action,
        REVIEWS,
        lambda: services.submit_review(db, review, actor=assignment.reviewer),
    )
    if (state, action) in REVIEWS:
        assert review.submitted_at is not None
