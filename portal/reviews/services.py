"""Business rules of peer review: the reviewer pool, conflicts and waivers, suggestions and
assignments, writing and submitting reviews, and the ranking staff decide from. Services flush;
the caller commits."""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import func, select

from portal.auth.models import Role, RoleGrant, User
from portal.core import audit
from portal.core.errors import ConflictError, ValidationError
from portal.core.models import AnySession, utcnow
from portal.core.permissions import check
from portal.proposals import services as proposal_services
from portal.proposals.models import Call, Proposal, ProposalState
from portal.reviews import emails
from portal.reviews.conflicts import Conflict, blocking_conflicts, conflicts_of, is_waived
from portal.reviews.models import (
    OPEN_ASSIGNMENTS,
    Assignment,
    ConflictWaiver,
    DeclaredConflict,
    Review,
    ReviewerProfile,
    ReviewState,
)
from portal.reviews.permissions import (
    can_be_assigned,
    can_manage_reviews,
    can_waive_conflict,
    can_write_review,
    conflict_settings,
    is_reviewer,
)
from portal.reviews.workflow import ASSIGNMENT_WORKFLOW, REVIEW_WORKFLOW

# --- the reviewer pool -------------------------------------------------------------------------


def save_profile(
    session: AnySession, reviewer: User, *, actor: User, expertise: Iterable[str], load_limit: int
) -> ReviewerProfile:
    """A reviewer states their expertise (keywords from the list, or their own) and load limit;
    program staff may do it for them."""
    if actor.id != reviewer.id:
        check(can_manage_reviews, actor)
    if not is_reviewer(reviewer):
        raise ValidationError("Only people in the reviewer pool have a reviewer profile.")
    if not 1 <= load_limit <= 50:
        raise ValidationError("The load limit is between 1 and 50 proposals per call.")
    words = sorted({w.strip().lower()[:60] for w in expertise if w.strip()})[:30]
    profile = session.scalar(select(ReviewerProfile).where(ReviewerProfile.user_id == reviewer.id))
    profile = profile or ReviewerProfile(user_id=reviewer.id)
    profile.expertise, profile.load_limit = words, load_limit
    session.add(profile)
    session.flush()
    audit.record(session, "reviewer.profile", actor=actor, obj=profile, expertise=words)
    return profile


def declare_conflict(
    session: AnySession,
    reviewer: User,
    *,
    actor: User,
    person_id: int | None = None,
    institution_id: int | None = None,
    reason: str = "",
) -> DeclaredConflict:
    """A reviewer declares a person or an institution they must not review."""
    if actor.id != reviewer.id:
        check(can_manage_reviews, actor)
    if (person_id is None) == (institution_id is None):
        raise ValidationError("Name either a person or an institution.")
    declared = DeclaredConflict(
        reviewer_id=reviewer.id,
        person_id=person_id,
        institution_id=institution_id,
        reason=reason.strip()[:500],
    )
    session.add(declared)
    session.flush()
    audit.record(session, "reviewer.declare_conflict", actor=actor, obj=declared)
    return declared


def remove_declared_conflict(
    session: AnySession, declared: DeclaredConflict, *, actor: User
) -> None:
    """A reviewer takes back a conflict they declared (program staff may do it for them); the
    conflicts detected from verified facts stay."""
    if actor.id != declared.reviewer_id:
        check(can_manage_reviews, actor)
    audit.record(
        session,
        "reviewer.remove_conflict",
        actor=actor,
        obj=declared,
        person_id=declared.person_id,
        institution_id=declared.institution_id,
    )
    session.delete(declared)
    session.flush()


def waive_conflict(
    session: AnySession, proposal: Proposal, reviewer: User, *, actor: User, reason: str
) -> ConflictWaiver:
    """A program officer lets ``reviewer`` review ``proposal`` despite a conflict, with a written
    reason (audited, shown in the proposal's history to staff). Being on the team is never waived."""
    check(can_waive_conflict, actor, proposal)
    reason = reason.strip()
    if len(reason) < 10:
        raise ValidationError(
            "Write why the conflict does not matter here (10 characters or more)."
        )
    found = conflicts_of(reviewer, proposal, **conflict_settings())
    if not found:
        raise ValidationError("There is no conflict to waive.")
    if any(c.kind == "team" for c in found):
        raise ValidationError("A member of the team never reviews their own proposal.")
    if is_waived(session, reviewer.id, proposal.id):
        # One waiver per reviewer and proposal (a unique constraint): a second would be a 500.
        raise ValidationError("This reviewer's conflicts with this proposal are waived already.")
    waiver = ConflictWaiver(
        proposal_id=proposal.id,
        reviewer_id=reviewer.id,
        reason=reason[:1000],
        waived_by_id=actor.id,
    )
    session.add(waiver)
    session.flush()
    audit.record(
        session,
        "proposal.waive_conflict",
        actor=actor,
        obj=proposal,
        reviewer_id=reviewer.id,
        conflicts=[c.kind for c in found],
        reason=reason,
    )
    return waiver


# --- suggestions and assignments ---------------------------------------------------------------


@dataclass(frozen=True)
class Suggestion:
    reviewer: User
    #: Expertise keywords that match the proposal's field and text.
    matches: tuple[str, ...]
    #: Open assignments in this call, and the reviewer's limit.
    load: int
    limit: int
    #: Why the reviewer cannot be assigned (empty: they can).
    conflicts: tuple[Conflict, ...]


def suggestions(session: AnySession, proposal: Proposal) -> list[Suggestion]:
    """Every reviewer in the pool for ``proposal``: those without conflicts first, by expertise
    match, then by lightest load; conflicted ones last, with their reasons (never assignable)."""
    reviewers = session.scalars(
        select(User)
        .join(RoleGrant, RoleGrant.user_id == User.id)
        .where(RoleGrant.role == Role.REVIEWER, User.is_disabled.is_(False))
        .order_by(User.display_name, User.id)
    ).all()
    profiles = {
        p.user_id: p
        for p in session.scalars(
            select(ReviewerProfile).where(ReviewerProfile.user_id.in_([r.id for r in reviewers]))
        )
    }
    loads = dict(
        session.execute(
            select(Assignment.reviewer_id, func.count())
            .join(Proposal, Proposal.id == Assignment.proposal_id)
            .where(Proposal.call_id == proposal.call_id, Assignment.state.in_(OPEN_ASSIGNMENTS))
            .group_by(Assignment.reviewer_id)
        ).all()
    )
    already = {
        a.reviewer_id
        for a in session.scalars(
            select(Assignment).where(
                Assignment.proposal_id == proposal.id, Assignment.state.in_(OPEN_ASSIGNMENTS)
            )
        )
    }
    text = f"{proposal.field} {proposal.title} {proposal.abstract}".lower()
    settings = conflict_settings()
    out = []
    for r in reviewers:
        if r.id in already:
            continue
        profile = profiles.get(r.id)
        words = profile.expertise if profile else []
        out.append(
            Suggestion(
                reviewer=r,
                matches=tuple(w for w in words if w in text),
                load=int(loads.get(r.id, 0)),
                limit=profile.load_limit if profile else 5,
                conflicts=tuple(blocking_conflicts(r, proposal, **settings)),
            )
        )
    return sorted(
        out,
        key=lambda s: (
            bool(s.conflicts),
            s.load >= s.limit,
            -len(s.matches),
            s.load,
            s.reviewer.display_name,
        ),
    )


def assign(
    session: AnySession,
    proposal: Proposal,
    reviewer: User,
    *,
    actor: User,
    due_at: dt.datetime | None = None,
) -> Assignment:
    """Program staff ask ``reviewer`` to review ``proposal`` (which goes into review with its first
    assignment). A reviewer with an unwaived conflict cannot be assigned."""
    check(can_manage_reviews, actor)
    if proposal.state not in (ProposalState.SUBMITTED, ProposalState.IN_REVIEW):
        raise ConflictError("Only submitted proposals are reviewed.")
    check(can_be_assigned, reviewer, proposal)
    taken = session.scalar(
        select(Assignment.id).where(
            Assignment.proposal_id == proposal.id,
            Assignment.reviewer_id == reviewer.id,
            Assignment.state.in_(OPEN_ASSIGNMENTS),
        )
    )
    if taken is not None:
        raise ConflictError(f"{reviewer.display_name} is already assigned to this proposal.")
    if proposal.state == ProposalState.SUBMITTED:
        proposal_services.start_review(session, proposal, actor=actor)
    due = due_at or proposal.call.reviews_due_at or utcnow() + dt.timedelta(days=21)
    assignment = Assignment(
        proposal_id=proposal.id, reviewer_id=reviewer.id, due_at=due, assigned_by_id=actor.id
    )
    session.add(assignment)
    session.flush()
    audit.record(session, "assignment.create", actor=actor, obj=assignment, proposal_id=proposal.id)
    emails.assigned(session, assignment)
    return assignment


def answer(
    session: AnySession,
    assignment: Assignment,
    action: str,
    *,
    actor: User,
    reason: str | None = None,
) -> Assignment:
    """The reviewer accepts, declines (with a reason) or declares a conflict (withdrawing the
    assignment); staff may withdraw it (``remove``)."""
    if action not in ("accept", "decline", "declare_conflict", "remove"):
        raise ValidationError("Unknown answer.")
    return ASSIGNMENT_WORKFLOW.run(session, assignment, action, actor=actor, reason=reason)


# --- reviews -----------------------------------------------------------------------------------


def review_of(session: AnySession, assignment: Assignment, *, actor: User) -> Review:
    """The reviewer's review of the proposal's current version (a draft is made on first use)."""
    version = assignment.proposal.version
    review = next((r for r in assignment.reviews if r.version == version), None)
    if review is None:
        # Not flushed before it is allowed (and added): the permission check reads the database.
        with session.no_autoflush:
            review = Review(assignment=assignment, version=version, scores={}, comments={})
            if not can_write_review(actor, review):
                assignment.reviews.remove(review)
            check(can_write_review, actor, review)
        session.add(review)
        session.flush()
    return review


def save_review(
    session: AnySession,
    review: Review,
    *,
    actor: User,
    scores: dict[int, int | None],
    comments: dict[int, str],
    to_applicant: str,
    confidential: str,
) -> Review:
    """Save the review as a draft (scores may be missing; those given must be on the scale)."""
    check(can_write_review, actor, review)
    if review.state != ReviewState.DRAFT:
        raise ConflictError("This review is submitted; it no longer changes.")
    scale = {c.id: c.scale_max for c in review.assignment.proposal.call.criteria}
    for cid, score in scores.items():
        if cid not in scale:
            raise ValidationError("Score only the call's criteria.")
        if score is not None and not 1 <= score <= scale[cid]:
            raise ValidationError(f"Scores on this criterion go from 1 to {scale[cid]}.")
    review.scores = {str(k): v for k, v in scores.items() if v is not None}
    review.comments = {str(k): v.strip()[:5000] for k, v in comments.items() if v.strip()}
    review.to_applicant, review.confidential = to_applicant.strip(), confidential.strip()
    session.flush()
    audit.record(session, "review.save", actor=actor, obj=review)
    return review


def submit_review(session: AnySession, review: Review, *, actor: User) -> Review:
    """Submit a complete review (every criterion scored, a comment to the applicants)."""
    return REVIEW_WORKFLOW.run(session, review, "submit", actor=actor)


# --- ranking -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ranked:
    proposal: Proposal
    #: Weighted score in 0..100 (each criterion's score as a share of its scale), or None.
    score: float | None
    #: Standard deviation of the reviewers' weighted scores (the spread).
    spread: float | None
    #: Each submitted review's weighted score, by reviewer.
    by_reviewer: tuple[tuple[User, float], ...]
    reviews_in: int
    reviews_wanted: int


def weighted(review: Review, call: Call) -> float | None:
    """A review's weighted score on a 0 to 100 scale, or None if a criterion is unscored."""
    total_weight = sum(c.weight for c in call.criteria)
    if not total_weight:
        return None
    parts = []
    for c in call.criteria:
        score = review.scores.get(str(c.id))
        if not isinstance(score, int):
            return None
        parts.append(c.weight * (score - 1) / max(c.scale_max - 1, 1))
    return round(100 * sum(parts) / total_weight, 1)


def ranking(session: AnySession, call: Call, proposals: Sequence[Proposal]) -> list[Ranked]:
    """The proposals ranked by the mean weighted score of their submitted reviews of the current
    version (unscored last), in a bounded number of queries."""
    ids = [p.id for p in proposals]
    rows = session.execute(
        select(Review, Assignment, User)
        .join(Assignment, Assignment.id == Review.assignment_id)
        .join(User, User.id == Assignment.reviewer_id)
        .where(Assignment.proposal_id.in_(ids), Review.state == ReviewState.SUBMITTED)
        # Reviewers in the order they were assigned (without it, PostgreSQL's order varies).
        .order_by(Assignment.id, Review.id)
    ).all()
    by_proposal: dict[int, list[tuple[User, float]]] = {}
    versions = {p.id: p.version for p in proposals}
    for review, a, reviewer in rows:
        if review.version != versions[a.proposal_id]:
            continue
        w = weighted(review, call)
        if w is not None:
            by_proposal.setdefault(a.proposal_id, []).append((reviewer, w))
    out = []
    for p in proposals:
        scores = by_proposal.get(p.id, [])
        values = [s for _, s in scores]
        out.append(
            Ranked(
                proposal=p,
                score=round(statistics.mean(values), 1) if values else None,
                spread=round(statistics.pstdev(values), 1) if len(values) > 1 else None,
                by_reviewer=tuple(scores),
                reviews_in=len(values),
                reviews_wanted=call.reviews_wanted,
            )
        )
    return sorted(out, key=lambda r: (r.score is None, -(r.score or 0), r.proposal.id))
