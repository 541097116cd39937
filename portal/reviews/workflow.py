"""Assignments (invited → accepted / declined / conflict / removed) and reviews (draft → submitted),
who may take each step and what each step tells whom."""

from __future__ import annotations

from typing import Any

from portal.core.errors import ValidationError
from portal.core.models import utcnow
from portal.core.workflow import Step, Transition, Workflow
from portal.reviews import emails, permissions
from portal.reviews.models import Assignment, Review, ReviewState
from portal.reviews.models import AssignmentState as A

ASSIGNMENT_TRANSITIONS: dict[str, Transition[A]] = {
    "accept": Transition(frozenset({A.INVITED}), A.ACCEPTED, "Accept"),
    "decline": Transition(
        frozenset({A.INVITED}), A.DECLINED, "Decline", needs_reason=True, style="secondary"
    ),
    "declare_conflict": Transition(
        frozenset({A.INVITED, A.ACCEPTED}),
        A.CONFLICT,
        "Declare a conflict of interest",
        needs_reason=True,
        style="warning",
    ),
    "remove": Transition(
        frozenset({A.INVITED, A.ACCEPTED}), A.REMOVED, "Withdraw the assignment", style="danger"
    ),
}

ASSIGNMENT_WORKFLOW: Workflow[Assignment, A] = Workflow(
    name="assignment",
    noun="assignment",
    model=Assignment,
    transitions=ASSIGNMENT_TRANSITIONS,
    permissions={
        "accept": permissions.can_answer_assignment,
        "decline": permissions.can_answer_assignment,
        "declare_conflict": permissions.can_declare_conflict,
        "remove": permissions.can_remove_assignment,
    },
    mails={
        "decline": emails.declined,
        "declare_conflict": emails.declined,
        "remove": emails.removed,
    },
    # Accepting is the answer staff wait for; their list shows it, nobody needs a mail.
    silent=frozenset({"accept"}),
    fields=lambda step: {"decided_at": utcnow(), "reason": step.reason},
)


def _complete(step: Step[Review, Any]) -> None:
    """Every criterion scored within its scale, and a comment to the applicants."""
    review = step.obj
    criteria = review.assignment.proposal.call.criteria
    for c in criteria:
        score = review.scores.get(str(c.id))
        if not isinstance(score, int) or not 1 <= score <= c.scale_max:
            raise ValidationError(f"Score “{c.name}” from 1 to {c.scale_max} before submitting.")
    if len(review.to_applicant.strip()) < 20:
        raise ValidationError("Write a comment to the applicants (20 characters or more).")


REVIEW_TRANSITIONS: dict[str, Transition[ReviewState]] = {
    "submit": Transition(
        frozenset({ReviewState.DRAFT}), ReviewState.SUBMITTED, "Submit the review"
    ),
}

REVIEW_WORKFLOW: Workflow[Review, ReviewState] = Workflow(
    name="review",
    noun="review",
    model=Review,
    transitions=REVIEW_TRANSITIONS,
    permissions={"submit": permissions.can_write_review},
    mails={"submit": emails.review_submitted},
    silent=frozenset(),
    fields=lambda step: {"submitted_at": utcnow()},
    checks={"submit": _complete},
)
