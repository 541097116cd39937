"""The reviewer's list of assignments against the rule of the assignment page.

``my_assignments`` (every open assignment of the reviewer) does not look at conflicts of
interest — they come from affiliations, declarations and other proposals — so it lists
assignments whose proposal the reviewer now has an unwaived conflict with, which
``can_answer_assignment`` (the page) refuses. That is the documented disagreement, exactly those
rows. The lists (the queue, the dashboard card) filter with ``assignments_to_answer``, which
asks the conflict rule in SQL and agrees with the page everywhere."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy.orm import Session

from portal.auth.models import Role, User
from portal.proposals.models import ProposalState
from portal.reviews.models import Assignment, AssignmentState, ConflictWaiver, DeclaredConflict
from portal.reviews.permissions import (
    assigners,
    assignments_to_answer,
    can_answer_assignment,
    can_manage_reviews,
    my_assignments,
)
from tests.factories import (
    ROLE_NAMES,
    make_actor,
    make_assignment,
    make_institution,
    make_proposal,
    make_reviewer,
    make_user,
)
from tests.support.app import login
from tests.support.visibility import disagreements, recipients_disagree


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield


def _world(db: Session) -> tuple[list[User], list[Assignment], set[Assignment]]:
    """Two reviewers, each with open, answered, conflicted and waived assignments; the
    conflicted ones (unwaived) are returned as the third item."""
    reviewers = [make_reviewer(db), make_reviewer(db)]
    everyone = [*reviewers, make_user(db, Role.PROGRAM_OFFICER), make_user(db, Role.RESEARCHER)]
    assignments: list[Assignment] = []
    conflicted: set[Assignment] = set()
    for reviewer in reviewers:
        for state in AssignmentState:
            assignments.append(make_assignment(db, reviewer=reviewer, state=state))
        # Conflicts that came to light after assigning: declared, and one waived.
        for waived in (False, True):
            proposal = make_proposal(db, state=ProposalState.IN_REVIEW)
            db.add(
                DeclaredConflict(reviewer_id=reviewer.id, institution_id=proposal.institution_id)
            )
            if waived:
                db.add(
                    ConflictWaiver(
                        proposal_id=proposal.id, reviewer_id=reviewer.id, reason="Long ago."
                    )
                )
            a = make_assignment(db, proposal=proposal, reviewer=reviewer)
            assignments.append(a)
            if not waived:
                conflicted.add(a)
    db.flush()
    return everyone, assignments, conflicted


def test_the_queue_query_and_the_rule_disagree_exactly_on_unwaived_conflicts(db: Session) -> None:
    users, assignments, conflicted = _world(db)

    def open_and_answerable(user: User, a: Assignment) -> bool:
        return a.state in (AssignmentState.INVITED, AssignmentState.ACCEPTED) and (
            can_answer_assignment(user, a)
        )

    found = disagreements(db, my_assignments, open_and_answerable, users, assignments)
    assert len(found) == len(conflicted) == 2
    assert all("sees" in f and "the rule says False" in f for f in found)


def test_the_lists_filter_agrees_with_the_rule(db: Session) -> None:
    users, assignments, conflicted = _world(db)

    def open_and_answerable(user: User, a: Assignment) -> bool:
        return a.state in (AssignmentState.INVITED, AssignmentState.ACCEPTED) and (
            can_answer_assignment(user, a)
        )

    assert disagreements(db, assignments_to_answer, open_and_answerable, users, assignments) == []
    listed = {a for u in users for a in db.scalars(assignments_to_answer(u))}
    assert listed and not listed & conflicted


def test_decline_mails_go_to_exactly_those_who_may_assign(db: Session) -> None:
    own = make_institution(db)
    users = [u for name in ROLE_NAMES if (u := make_actor(db, name, own)) is not None]
    assignment = make_assignment(db)
    # Administrators may assign too, but the decline mail goes to program officers only.
    assert recipients_disagree(
        db, lambda a: assigners(), lambda u, a: can_manage_reviews(u), users, [assignment]
    ) == [f"{users[-1]!r} is not mailed about {assignment!r}"]


def test_the_dashboard_card_hides_assignments_with_a_conflict(
    client: FlaskClient, db: Session
) -> None:
    reviewer = make_reviewer(db)
    fine = make_assignment(db, reviewer=reviewer)
    blocked = make_assignment(db, reviewer=reviewer)
    db.add(
        DeclaredConflict(reviewer_id=reviewer.id, institution_id=blocked.proposal.institution_id)
    )
    db.flush()
    login(client, reviewer)
    page = client.get("/dashboard").get_data(as_text=True)
    assert fine.proposal.title in page
    assert blocked.proposal.title not in page
