"""Who may manage the reviewer pool, assign reviewers, review, waive conflicts, and see reviews.

A reviewer with a conflict on a proposal is treated as if the proposal did not exist for them
(404), unless a program officer waived that conflict.
"""

from __future__ import annotations

from typing import Any

from flask import current_app
from sqlalchemy import Select, false, select
from sqlalchemy.orm import object_session

from portal.auth.models import Role, RoleGrant, User
from portal.auth.permissions import as_user, is_staff
from portal.core.memo import per_request
from portal.core.models import AnySession
from portal.core.permissions import rule
from portal.proposals.models import Call, Proposal, ProposalState
from portal.proposals.permissions import can_decide_proposal
from portal.reviews.conflicts import blocked, blocking_conflicts
from portal.reviews.models import OPEN_ASSIGNMENTS, Assignment, AssignmentState, Review


def conflict_settings() -> dict[str, Any]:
    """``CONFLICT_YEARS`` and ``OWN_PROPOSAL_IS_CONFLICT`` from the configuration."""
    cfg = current_app.config
    return {
        "years": int(cfg["CONFLICT_YEARS"]),
        "own_proposal_conflicts": bool(cfg["OWN_PROPOSAL_IS_CONFLICT"]),
    }


def is_reviewer(user: Any) -> bool:
    """Someone in the reviewer pool (the reviewer role)."""
    u = as_user(user)
    return u is not None and u.has_role(Role.REVIEWER)


@rule("Only program staff manage reviewers and assignments.")
def can_manage_reviews(user: Any) -> bool:
    """Program staff."""
    return is_staff(user)


@rule("This reviewer has a conflict of interest with the proposal.")
def can_be_assigned(reviewer: Any, proposal: Proposal) -> bool:
    """A reviewer without an unwaived conflict with the proposal."""
    return is_reviewer(reviewer) and not blocking_conflicts(
        reviewer, proposal, **conflict_settings()
    )


@per_request
def has_blocking_conflict(session: AnySession, reviewer_id: int, proposal_id: int) -> bool:
    """Whether the reviewer has a conflict with the proposal that keeps them from it: the rule of
    ``blocking_conflicts``, in one statement (and once per page, which asks it several times)."""
    return (
        session.scalar(
            select(Proposal.id).where(
                Proposal.id == proposal_id, blocked(reviewer_id, **conflict_settings())
            )
        )
        is not None
    )


@rule("This assignment is not yours.")
def can_answer_assignment(user: Any, assignment: Assignment) -> bool:
    """The assigned reviewer, while no conflict keeps them from the proposal."""
    u = as_user(user)
    session = object_session(assignment)
    assert session is not None, "the assignment must be in a session"
    return (
        u is not None
        and assignment.reviewer_id == u.id
        and not has_blocking_conflict(session, u.id, assignment.proposal_id)
    )


@rule("This assignment is not yours.")
def can_declare_conflict(user: Any, assignment: Assignment) -> bool:
    """The assigned reviewer, at any time (declaring a conflict withdraws the assignment)."""
    u = as_user(user)
    return u is not None and assignment.reviewer_id == u.id


@rule("Only program staff take an assignment back.")
def can_remove_assignment(user: Any, assignment: Assignment) -> bool:
    """Program staff."""
    return is_staff(user)


@rule("You cannot see this review.")
def can_view_assignment(user: Any, assignment: Assignment) -> bool:
    """Its reviewer (without a blocking conflict), program staff, and those who decide the
    proposal."""
    return (
        can_answer_assignment(user, assignment)
        or is_staff(user)
        or can_decide_proposal(user, assignment.proposal)
    )


@rule("Only the assigned reviewer writes this review, once they accepted the assignment.")
def can_write_review(user: Any, review: Review) -> bool:
    """The reviewer of an accepted assignment without a blocking conflict, while the proposal is
    under review (not after a decision, nor once withdrawn)."""
    return (
        review.assignment.state == AssignmentState.ACCEPTED
        and review.assignment.proposal.state in (ProposalState.SUBMITTED, ProposalState.IN_REVIEW)
        and can_answer_assignment(user, review.assignment)
    )


def can_see_other_reviews(user: Any, assignment: Assignment) -> bool:
    """Whether ``assignment``'s reviewer sees the other reviews of the proposal: staff and deciders
    always; the reviewer once their own review of this version is in (or always, where the call
    allows it)."""
    if is_staff(user) or can_decide_proposal(user, assignment.proposal):
        return True
    if not can_answer_assignment(user, assignment):
        return False
    if not assignment.proposal.call.reviews_hidden_until_own:
        return True
    version = assignment.proposal.version
    return any(r.version == version and r.submitted_at is not None for r in assignment.reviews)


@rule("Only program staff waive a conflict of interest.")
def can_waive_conflict(user: Any, proposal: Proposal) -> bool:
    """Program staff, with a written reason."""
    return is_staff(user)


@rule("Only program staff, or this call's allocation committee, see the call's ranking.")
def can_see_ranking(user: Any, call: Call) -> bool:
    """Program staff; the allocation committee of a call that delegates its decisions."""
    u = as_user(user)
    if u is None:
        return False
    return is_staff(u) or (
        call.committee_decides and any(m.user_id == u.id for m in call.committee)
    )


@rule("Only program staff, or this call's allocation committee, see this decision.")
def can_open_decision(user: Any, proposal: Proposal) -> bool:
    """Those who decide the proposal; program staff (who start the review of a resubmission)."""
    u = as_user(user)
    if u is None or any(m.user_id == u.id for m in proposal.team):
        return False
    return can_decide_proposal(u, proposal) or is_staff(u)


def my_assignments(user: Any) -> Select[Assignment]:
    """The reviewer's open assignments, conflicts or not (``assignments_to_answer`` leaves out
    those a conflict keeps them from: what their lists show)."""
    u = as_user(user)
    if u is None:
        return select(Assignment).where(false())
    return select(Assignment).where(
        Assignment.reviewer_id == u.id, Assignment.state.in_(OPEN_ASSIGNMENTS)
    )


def assignments_to_answer(user: Any) -> Select[Assignment]:
    """``can_answer_assignment`` as a list filter over the reviewer's open assignments (with
    their proposals joined): those whose proposal no conflict keeps them from."""
    u = as_user(user)
    if u is None:
        return select(Assignment).where(false())
    return (
        my_assignments(u)
        .join(Proposal, Proposal.id == Assignment.proposal_id)
        .where(~blocked(u.id, **conflict_settings()))
    )


def assigners() -> Select[User]:
    """Who hears that a reviewer declined or declared a conflict: program officers (the people
    ``can_manage_reviews`` lets assign someone else)."""
    return (
        select(User)
        .where(
            User.is_disabled.is_(False),
            User.id.in_(select(RoleGrant.user_id).where(RoleGrant.role == Role.PROGRAM_OFFICER)),
        )
        .order_by(User.id)
    )
