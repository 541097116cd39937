"""Pages of scoring and deciding: the reviewer's queue, the review form (draft, submit, then the
other reviews where allowed), a call's ranking for those who decide (with its CSV), and the
decision on one proposal (approve with GPU-hours, ask for a revision, decline). Also the status
of the review that the applicants see on their proposal's page (``review_status``), which never
names a reviewer in a single-blind call.

These routes are added to ``portal.reviews.views.bp``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import or_, select
from sqlalchemy.orm import contains_eager, joinedload, selectinload

from portal.auth.models import User
from portal.auth.permissions import is_staff
from portal.core.errors import ConflictError, InvalidTransitionError, ValidationError
from portal.core.forms import ConfirmForm
from portal.core.listing import ListSpec, csv_response, list_page
from portal.core.models import utcnow
from portal.core.permissions import check
from portal.core.web import commit_or_flash, load, login_required, post_action
from portal.extensions import db
from portal.proposals import services as proposal_services
from portal.proposals.models import (
    Award,
    Call,
    CallResource,
    Proposal,
    ProposalState,
    ResourceRequest,
    TeamMember,
)
from portal.proposals.permissions import can_decide_proposal
from portal.proposals.workflow import PROPOSAL_WORKFLOW
from portal.reviews import services
from portal.reviews.models import (
    OPEN_ASSIGNMENTS,
    Assignment,
    AssignmentState,
    Review,
    ReviewState,
)
from portal.reviews.permissions import (
    assignments_to_answer,
    can_answer_assignment,
    can_open_decision,
    can_see_other_reviews,
    can_see_ranking,
)
from portal.reviews.review_forms import DecisionForm, ReviewForm
from portal.reviews.views import bp

#: Proposal states in which reviewers review (a resubmitted proposal is submitted again).
UNDER_REVIEW = (ProposalState.SUBMITTED, ProposalState.IN_REVIEW)
#: States that follow a decision, in which the applicants read the reviewers' comments.
DECIDED = (ProposalState.ACTIVE, ProposalState.DECLINED, ProposalState.REVISE)


# --- who may see a call's ranking and a proposal's decision page ---------------------------------


# --- the reviewer's queue ------------------------------------------------------------------------

QUEUE = ListSpec(
    search=(Proposal.title,),
    state_column=Assignment.state,
    states=OPEN_ASSIGNMENTS,
    sorts={
        "due": (Assignment.due_at, Assignment.id),
        "title": (Proposal.title, Assignment.id),
    },
    placeholder="Proposal title",
)


def _current_review(a: Assignment) -> Review | None:
    return next((r for r in a.reviews if r.version == a.proposal.version), None)


@bp.get("/reviews/")
@login_required
def queue() -> ResponseReturnValue:
    """The current user's open assignments of proposals under review, by due date, with the state
    of their review of the current version; proposals they have a blocking conflict with are left
    out (as if they did not exist)."""
    stmt = (
        assignments_to_answer(current_user)
        .where(Proposal.state.in_(UNDER_REVIEW))
        .options(
            contains_eager(Assignment.proposal).joinedload(Proposal.call),
            selectinload(Assignment.reviews),
        )
    )
    listing = list_page(stmt, QUEUE)
    rows = [(a, _current_review(a)) for a in listing.page.items]
    return render_template(
        "reviews/queue.html", page=listing.page, form=listing.form, rows=rows, now=utcnow()
    )


# --- the review ----------------------------------------------------------------------------------


def _my_assignment(assignment_id: int) -> Assignment:
    """The current user's assignment ``assignment_id``; 404 for anyone else's, and for one whose
    proposal they have a blocking conflict with (IDOR, conflicts)."""
    a = load(
        Assignment,
        assignment_id,
        None,
        joinedload(Assignment.proposal).joinedload(Proposal.call).selectinload(Call.criteria),
        selectinload(Assignment.reviews),
    )
    if not can_answer_assignment(current_user, a):
        abort(404)
    return a


def _others(a: Assignment) -> list[Review]:
    """The other submitted reviews of the proposal's current version."""
    return list(
        db.session.scalars(
            select(Review)
            .join(Assignment, Assignment.id == Review.assignment_id)
            .where(
                Assignment.proposal_id == a.proposal_id,
                Assignment.id != a.id,
                Review.version == a.proposal.version,
                Review.state == ReviewState.SUBMITTED,
            )
            .order_by(Review.submitted_at, Review.id)
        )
    )


def _review_page(a: Assignment, form: ReviewForm, status: int = 200) -> ResponseReturnValue:
    review = _current_review(a)
    writable = (
        a.state == AssignmentState.ACCEPTED
        and a.proposal.state in UNDER_REVIEW
        and (review is None or review.state == ReviewState.DRAFT)
    )
    others = _others(a) if can_see_other_reviews(current_user, a) else None
    return render_template(
        "reviews/review.html",
        assignment=a,
        proposal=a.proposal,
        call=a.proposal.call,
        review=review,
        form=form,
        writable=writable,
        others=others,
        submit_form=ConfirmForm(),
        now=utcnow(),
    ), status


def _refuse_unless_writable(a: Assignment) -> None:
    if a.state != AssignmentState.ACCEPTED:
        flash("Accept the assignment first; then write your review.", "warning")
        abort(redirect(url_for(".review", assignment_id=a.id), 303))
    if a.proposal.state not in UNDER_REVIEW:
        flash(
            f"The proposal is {a.proposal.state.label.lower()}: it is not under review.", "warning"
        )
        abort(redirect(url_for(".review", assignment_id=a.id), 303))


@bp.get("/reviews/assignments/<int:assignment_id>/review")
@login_required
def review(assignment_id: int) -> ResponseReturnValue:
    """The review of the proposal's current version: the form while it is a draft (nothing is
    written before the first save), then what was submitted and the other reviews if allowed."""
    a = _my_assignment(assignment_id)
    return _review_page(a, ReviewForm.for_call(a.proposal.call.criteria, _current_review(a)))


@bp.post("/reviews/assignments/<int:assignment_id>/review")
@login_required
def review_save(assignment_id: int) -> ResponseReturnValue:
    """Save the review as a draft (scores may be missing; those given are on the scale)."""
    a = _my_assignment(assignment_id)
    _refuse_unless_writable(a)
    form = ReviewForm.for_call(a.proposal.call.criteria, None)
    if form.validate_on_submit():

        def save() -> Review:
            r = services.review_of(db.session, a, actor=current_user)
            return services.save_review(db.session, r, actor=current_user, **form.details())

        ok, _ = commit_or_flash(save)
        if ok:
            flash("Draft saved. Submit it when every criterion is scored.", "success")
            return redirect(url_for(".review", assignment_id=a.id))
    return _review_page(a, form, 422)


@bp.post("/reviews/assignments/<int:assignment_id>/review/submit")
@login_required
def review_submit(assignment_id: int) -> ResponseReturnValue:
    """Save what the form holds and submit the review, in one step: a review that is not complete
    (a criterion unscored, no comment to the applicants) is refused with the reason and nothing
    is saved."""
    a = _my_assignment(assignment_id)
    _refuse_unless_writable(a)
    form = ReviewForm.for_call(a.proposal.call.criteria, None)
    if form.validate_on_submit():

        def submit() -> Review:
            r = services.review_of(db.session, a, actor=current_user)
            if form.has_content():  # the form's own submit button (not a bare POST)
                services.save_review(db.session, r, actor=current_user, **form.details())
            return services.submit_review(db.session, r, actor=current_user)

        ok, _ = commit_or_flash(submit)
        if ok:
            flash("Your review is submitted. Thank you.", "success")
            return redirect(url_for(".review", assignment_id=a.id))
    return _review_page(a, form, 422)


# --- the ranking ---------------------------------------------------------------------------------


def _ranked_proposals(call: Call) -> Sequence[Proposal]:
    """The call's proposals under review that have reviewers, except those the current user is on
    the team of (nobody ranks their own)."""
    on_team = select(TeamMember.proposal_id).where(TeamMember.user_id == current_user.id)
    with_reviewers = select(Assignment.proposal_id).where(Assignment.state.in_(OPEN_ASSIGNMENTS))
    stmt = (
        select(Proposal)
        .where(
            Proposal.call_id == call.id,
            Proposal.state.in_(UNDER_REVIEW),
            or_(Proposal.state == ProposalState.IN_REVIEW, Proposal.id.in_(with_reviewers)),
            Proposal.id.not_in(on_team),
        )
        .options(joinedload(Proposal.institution))
        .order_by(Proposal.id)
    )
    if not is_staff(current_user):
        stmt = stmt.options(selectinload(Proposal.team))  # can_decide_proposal reads the team
    return db.session.scalars(stmt).all()


@bp.get("/reviews/calls/<int:call_id>/ranking")
@login_required
def ranking(call_id: int) -> ResponseReturnValue:
    """The call's proposals in review ranked by their mean weighted score, with the spread and
    each reviewer's weighted score (named to program staff only); ``?format=csv`` downloads it."""
    call = load(Call, call_id, None, selectinload(Call.criteria), selectinload(Call.committee))
    check(can_see_ranking, current_user, call)
    rows = services.ranking(db.session, call, _ranked_proposals(call))
    named = is_staff(current_user)
    may_decide = {
        r.proposal.id: named or can_decide_proposal(current_user, r.proposal) for r in rows
    }
    if request.args.get("format") == "csv":
        return csv_response(
            f"call-{call.id}-ranking.csv",
            [
                "rank",
                "id",
                "title",
                "institution",
                "state",
                "version",
                "weighted_score",
                "spread",
                "reviews_in",
                "reviews_wanted",
                "reviewer_scores",
            ],
            list(enumerate(rows, 1)),
            lambda ir: [
                ir[0],
                ir[1].proposal.id,
                ir[1].proposal.title,
                ir[1].proposal.institution.name,
                ir[1].proposal.state.value,
                ir[1].proposal.version,
                "" if ir[1].score is None else ir[1].score,
                "" if ir[1].spread is None else ir[1].spread,
                ir[1].reviews_in,
                ir[1].reviews_wanted,
                "; ".join(
                    f"{u.display_name if named else f'Reviewer {n}'}: {s}"
                    for n, (u, s) in enumerate(ir[1].by_reviewer, 1)
                ),
            ],
        )
    return render_template(
        "reviews/ranking.html", call=call, rows=rows, named=named, may_decide=may_decide
    )


# --- the decision --------------------------------------------------------------------------------


@dataclass(frozen=True)
class ReviewRow:
    review: Review
    reviewer: User
    weighted: float | None


def _decision_reviews(proposal: Proposal) -> tuple[list[ReviewRow], list[Assignment]]:
    """The submitted reviews of the current version, and every open assignment (with drafts)."""
    assignments = db.session.scalars(
        select(Assignment)
        .where(Assignment.proposal_id == proposal.id)
        .options(selectinload(Assignment.reviewer), selectinload(Assignment.reviews))
        .order_by(Assignment.id)
    ).all()
    rows = [
        ReviewRow(r, a.reviewer, services.weighted(r, proposal.call))
        for a in assignments
        for r in a.reviews
        if r.version == proposal.version and r.state == ReviewState.SUBMITTED
    ]
    return rows, [a for a in assignments if a.state in OPEN_ASSIGNMENTS]


@bp.route("/reviews/proposals/<int:proposal_id>/decide", methods=["GET", "POST"])
@login_required
def decide(proposal_id: int) -> ResponseReturnValue:
    """The reviews (scores, comments, confidential comments) and the requests; approve with
    GPU-hours per requested resource (at most what was asked for), ask for a revision or decline,
    each with the reason the applicants read."""
    proposal = load(
        Proposal,
        proposal_id,
        None,
        selectinload(Proposal.call).selectinload(Call.criteria),
        selectinload(Proposal.call).selectinload(Call.committee),
        selectinload(Proposal.team).selectinload(TeamMember.user),
        selectinload(Proposal.requests)
        .selectinload(ResourceRequest.call_resource)
        .selectinload(CallResource.resource),
        selectinload(Proposal.awards).selectinload(Award.call_resource),
        selectinload(Proposal.institution),
    )
    check(can_open_decision, current_user, proposal)
    form = DecisionForm.for_proposal(proposal)
    back = url_for(".decide", proposal_id=proposal.id)
    if request.method == "POST" and form.action.data == "start_review":
        return post_action(
            ConfirmForm(),
            lambda: proposal_services.start_review(db.session, proposal, actor=current_user),
            back=back,
            done=f"Version {proposal.version} is in review again, with the same reviewers.",
        )
    if form.validate_on_submit():
        try:
            decided = proposal_services.decide_proposal(
                db.session,
                proposal,
                form.action.data or "",
                actor=current_user,
                reason=form.reason.data,
                awards=form.awards() if form.action.data == "approve" else None,
            )
        except (ConflictError, InvalidTransitionError) as e:
            # Someone decided first: back to the page, which shows their decision.
            db.session.rollback()
            flash(str(e), "danger")
            return redirect(back), 303
        except ValidationError as e:
            db.session.rollback()
            flash(str(e), "danger")
        else:
            db.session.commit()
            flash(
                {
                    ProposalState.ACTIVE: "Approved: the proposal is an active project.",
                    ProposalState.REVISE: "Sent back to the team for a revision.",
                    ProposalState.DECLINED: "Declined; the team is told the reason.",
                }.get(decided.state, "Decided."),
                "success",
            )
            return redirect(url_for(".ranking", call_id=decided.call_id))
    reviews, assignments = _decision_reviews(proposal)
    actions = PROPOSAL_WORKFLOW.available(current_user, proposal)
    return render_template(
        "reviews/decide.html",
        form=form,
        proposal=proposal,
        call=proposal.call,
        reviews=reviews,
        assignments=assignments,
        actions={name: tr for name, tr in actions},
        may_decide=can_decide_proposal(current_user, proposal),
    ), (422 if request.method == "POST" else 200)


# --- what the applicants see on their proposal's page ----------------------------------------------


@dataclass(frozen=True)
class ReviewStatus:
    """Where a proposal stands in review, for its team: never who reviews (in a single-blind call,
    not even after the decision)."""

    state: ProposalState
    reviews_in: int
    reviews_wanted: int
    reviews_due_at: dt.datetime | None
    panel_at: dt.datetime | None
    #: After a decision: its reason, and the reviewers' comments to the applicants, each with the
    #: reviewer's name only where the call is not single-blind.
    reason: str | None
    comments: tuple[tuple[str | None, str], ...]
    awards: tuple[tuple[str, int], ...]


def review_status(proposal: Proposal) -> ReviewStatus | None:
    """The review status shown on ``proposal``'s page (None before review)."""
    if proposal.state not in (*UNDER_REVIEW, *DECIDED) or proposal.version == 0:
        return None
    call = proposal.call
    rows = db.session.execute(
        select(Review.state, Review.to_applicant, User.display_name)
        .join(Assignment, Assignment.id == Review.assignment_id)
        .join(User, User.id == Assignment.reviewer_id)
        .where(
            Assignment.proposal_id == proposal.id,
            Assignment.state.in_(OPEN_ASSIGNMENTS),
            Review.version == proposal.version,
        )
        .order_by(Review.submitted_at, Review.id)
    ).all()
    submitted = [r for r in rows if r.state == ReviewState.SUBMITTED]
    decided = proposal.state in DECIDED
    comments = tuple(
        (None if call.single_blind else r.display_name, r.to_applicant)
        for r in submitted
        if decided and r.to_applicant
    )
    active = proposal.state == ProposalState.ACTIVE
    awards = (
        tuple((a.call_resource.resource.name, a.hours) for a in proposal.awards) if active else ()
    )
    return ReviewStatus(
        state=proposal.state,
        reviews_in=len(submitted),
        reviews_wanted=call.reviews_wanted,
        reviews_due_at=call.reviews_due_at,
        panel_at=call.panel_at,
        reason=proposal.decision_reason if decided else None,
        comments=comments,
        awards=awards,
    )


@bp.app_context_processor
def _review_status_helper() -> dict[str, Any]:
    return {"review_status": review_status}
