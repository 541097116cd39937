"""What the scoring and decision tests share: a proposal in review with accepted reviewers, and
reviews written through the services."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.auth.models import Role, User
from portal.notifications.models import OutboxMessage
from portal.proposals.models import Call, Proposal, ProposalState
from portal.reviews import services
from portal.reviews.models import Assignment, Review
from tests.factories import make_call, make_proposal, make_user

#: Text long enough for a review's comment to the applicants.
TO_APPLICANT = "A clear plan; the evaluation section needs more detail on baselines."


def make_officer(session: Session, **kw: Any) -> User:
    return make_user(session, Role.PROGRAM_OFFICER, **kw)


def make_reviewer(session: Session, name: str, email: str) -> User:
    return make_user(session, Role.REVIEWER, display_name=name, email=email)


def in_review(
    session: Session,
    *,
    reviewers: int = 2,
    call: Call | None = None,
    officer: User | None = None,
    names: tuple[str, ...] = ("Quentin Scorer", "Rosalind Marker", "Sergei Grader"),
    **proposal_kw: Any,
) -> tuple[Proposal, User, list[Assignment]]:
    """A submitted proposal with ``reviewers`` reviewers assigned and accepted (so in review)."""
    officer = officer or make_officer(session)
    call = call or make_call(session)
    proposal = make_proposal(
        session, call=call, state=ProposalState.SUBMITTED, complete=True, **proposal_kw
    )
    assignments = []
    for name in names[:reviewers]:
        email = name.split()[0].lower() + f"{proposal.id}@reviewers.org"
        reviewer = make_reviewer(session, name, email)
        a = services.assign(session, proposal, reviewer, actor=officer)
        services.answer(session, a, "accept", actor=reviewer)
        assignments.append(a)
    return proposal, officer, assignments


def write_review(
    session: Session,
    a: Assignment,
    scores: tuple[int | None, ...],
    *,
    submit: bool = True,
    to_applicant: str = TO_APPLICANT,
    confidential: str = "Strong team; I would fund it.",
) -> Review:
    """``a``'s reviewer scores the call's criteria in order (and submits the review)."""
    criteria = a.proposal.call.criteria
    review = services.review_of(session, a, actor=a.reviewer)
    services.save_review(
        session,
        review,
        actor=a.reviewer,
        scores={c.id: s for c, s in zip(criteria, scores, strict=True)},
        comments={c.id: f"On {c.name.lower()}: fine." for c in criteria},
        to_applicant=to_applicant,
        confidential=confidential,
    )
    if submit:
        services.submit_review(session, review, actor=a.reviewer)
    return review


def mails(session: Session, template: str) -> list[OutboxMessage]:
    return list(
        session.scalars(
            select(OutboxMessage)
            .where(OutboxMessage.template == template)
            .order_by(OutboxMessage.id)
        )
    )
