"""E-mails about reviews: an assignment to the reviewer, a declined assignment or declared conflict
to program officers, a submitted review to those who decide, and reminders of reviews due soon or
overdue. Applicants never learn who reviewed (their decision mail names nobody)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select

from portal.core.models import AnySession, utcnow
from portal.core.workflow import Step
from portal.notifications.kinds import EmailKind, register_kind
from portal.notifications.reminders import Period, ReminderRule, register_rule
from portal.notifications.rendering import external_url
from portal.notifications.services import enqueue_email
from portal.proposals.permissions import deciders_of_proposal
from portal.reviews.models import Assignment, AssignmentState, Review, ReviewState
from portal.reviews.permissions import assigners

ASSIGNED = register_kind(
    EmailKind(
        "reviews/assigned",
        "Review assignments",
        "You are asked to review a proposal, by a date.",
        mandatory=True,
    )
)
DECLINED = register_kind(
    EmailKind(
        "reviews/declined",
        "Declined review assignments",
        "A reviewer declined an assignment or declared a conflict: someone else is needed.",
    )
)
SUBMITTED = register_kind(
    EmailKind(
        "reviews/submitted",
        "Reviews submitted",
        "A reviewer submitted a review of a proposal you decide on.",
    )
)
DUE = register_kind(
    EmailKind(
        "reviews/due",
        "Reminders of reviews due",
        "A review you accepted is due in three days, or overdue.",
    )
)


def _context(a: Assignment, **extra: Any) -> dict[str, Any]:
    return {
        "title": a.proposal.title,
        "call_title": a.proposal.call.title,
        "reviewer_name": a.reviewer.display_name,
        "due_on": a.due_at.strftime("%d %B %Y"),
        "url": external_url("reviews.assignment", assignment_id=a.id),
        **extra,
    }


def assigned(session: AnySession, assignment: Assignment) -> None:
    """The reviewer is asked to accept or decline."""
    enqueue_email(session, ASSIGNED.key, to=assignment.reviewer, context=_context(assignment))


def declined(session: AnySession, step: Step[Assignment, Any]) -> None:
    """Program officers hear that someone else is needed."""
    enqueue_email(
        session,
        DECLINED.key,
        to=session.scalars(assigners()).all(),
        context=_context(
            step.obj,
            conflict=step.action == "declare_conflict",
            reason=step.reason,
            assign_url=external_url("reviews.assign", proposal_id=step.obj.proposal_id),
        ),
    )


def removed(session: AnySession, step: Step[Assignment, Any]) -> None:
    """The reviewer hears the assignment was taken back."""
    enqueue_email(
        session,
        DECLINED.key,
        to=step.obj.reviewer,
        context=_context(step.obj, removed=True, reason=step.reason, conflict=False),
    )


def review_submitted(session: AnySession, step: Step[Review, Any]) -> None:
    """Those who decide the proposal hear that a review is in."""
    a = step.obj.assignment
    enqueue_email(
        session,
        SUBMITTED.key,
        to=session.scalars(deciders_of_proposal(a.proposal)).all(),
        context=_context(
            a, ranking_url=external_url("reviews.ranking", call_id=a.proposal.call_id)
        ),
    )


def _due(session: AnySession, now: dt.datetime) -> Sequence[Assignment]:
    """Accepted assignments whose review of the current version is not in, due within 3 days."""
    rows = session.scalars(
        select(Assignment).where(
            Assignment.state == AssignmentState.ACCEPTED,
            Assignment.due_at <= now + dt.timedelta(days=3),
        )
    ).all()
    return [
        a
        for a in rows
        if not any(
            r.version == a.proposal.version and r.state == ReviewState.SUBMITTED for r in a.reviews
        )
    ]


def remind_due(session: AnySession, assignment: Assignment) -> None:
    enqueue_email(
        session,
        DUE.key,
        to=assignment.reviewer,
        context=_context(assignment, overdue=assignment.due_at < utcnow()),
    )


register_rule(
    ReminderRule(
        key="reviews.due",
        period=Period.DAILY,
        due=_due,
        send=remind_due,
        description="Reviews due within three days or overdue, daily to the reviewer.",
    )
)
