"""The assignment e-mails: who gets them, and their rendered text compared with stored files
(``tests/notifications/expected/review_*.txt``; ``UPDATE_EXPECTED=1`` rewrites them)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.proposals.models import ProposalState
from portal.reviews import services
from tests.factories import make_call, make_institution, make_proposal, make_reviewer, make_user
from tests.support.mail import check_expected as _check
from tests.support.mail import outbox as _mails
from tests.support.mail import rendered as _rendered


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield


def test_assigning_asks_the_reviewer_and_declining_tells_program_officers(db: Session) -> None:
    inst = make_institution(db, name="Northlake University")
    ada = make_user(db, Role.RESEARCHER, institution=inst, display_name="Ada Lovelace")
    call = make_call(db, title="Open Models 2027")
    proposal = make_proposal(
        db, call=call, pi=ada, state=ProposalState.SUBMITTED, title="Reasoning in small models"
    )
    reviewer = make_reviewer(db, display_name="Rita Reviewer", email="rita@review.example")
    officer = make_user(
        db, Role.PROGRAM_OFFICER, display_name="Otto Officer", email="otto@atom-lab.org"
    )
    make_user(db, Role.ADMIN, email="admin@atom-lab.org")  # assigns too, but is not mailed
    due = dt.datetime(2027, 3, 1, 23, 59, tzinfo=dt.UTC)

    assignment = services.assign(db, proposal, reviewer, actor=officer, due_at=due)
    (asked,) = _mails(db, "reviews/assigned")
    assert asked.to_addr == "rita@review.example"
    _check("review_assigned", _rendered(asked))

    services.answer(db, assignment, "decline", actor=reviewer, reason="Travelling <all> March.")
    (told,) = _mails(db, "reviews/declined")
    assert told.to_addr == "otto@atom-lab.org"
    _check("review_declined", _rendered(told))
