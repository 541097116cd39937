"""Reviews due within three days, or overdue, are reminded to their reviewer once a day; a review
that is in, or an assignment not accepted, is not."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.core.models import utcnow
from portal.notifications.models import OutboxMessage
from portal.notifications.reminders import all_rules, run_reminders
from portal.reviews.models import AssignmentState, Review, ReviewState
from tests.factories import make_assignment


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    with app.app_context():
        yield


def _due_mails(db: Session) -> list[tuple[str, str]]:
    return [
        (m.to_addr, str(m.context.get("overdue")))
        for m in db.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.template == "reviews/due")
            .order_by(OutboxMessage.id)
        )
    ]


def test_reviews_due_soon_or_overdue_are_reminded_once_a_day(db: Session) -> None:
    now = utcnow()
    soon = make_assignment(db, state=AssignmentState.ACCEPTED, due_at=now + dt.timedelta(days=2))
    late = make_assignment(db, state=AssignmentState.ACCEPTED, due_at=now - dt.timedelta(days=1))
    make_assignment(db, state=AssignmentState.ACCEPTED, due_at=now + dt.timedelta(days=10))
    make_assignment(db, state=AssignmentState.INVITED, due_at=now + dt.timedelta(days=1))
    done = make_assignment(db, state=AssignmentState.ACCEPTED, due_at=now + dt.timedelta(days=1))
    db.add(
        Review(
            assignment=done,
            version=done.proposal.version,
            state=ReviewState.SUBMITTED,
            scores={},
            comments={},
            submitted_at=now,
        )
    )
    db.flush()
    rules = [r for r in all_rules() if r.key == "reviews.due"]
    assert run_reminders(db, now=now, rules=rules) == {"reviews.due": 2}
    assert sorted(_due_mails(db)) == sorted(
        [(soon.reviewer.email or "", "False"), (late.reviewer.email or "", "True")]
    )
    # Later the same day (not an hour later, which is tomorrow after 23:00): nothing again.
    end_of_day = now.replace(hour=23, minute=59, second=59, microsecond=999999)
    assert run_reminders(db, now=end_of_day, rules=rules) == {"reviews.due": 0}
    assert run_reminders(db, now=now + dt.timedelta(days=1), rules=rules) == {"reviews.due": 2}
