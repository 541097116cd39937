"""Pages of the reviewer pool and of assignments: a reviewer's profile and declared conflicts, the
pool for program staff, the assignment page of a proposal (suggestions, conflicts, waivers), and a
reviewer's assignment with the frozen proposal and its attachments.

A reviewer with a conflict that is not waived gets a 404 for the assignment and its attachments,
as for any object that is not theirs. The review queue, the review form and the ranking add their
routes to ``bp`` from ``review_views.py``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from flask import (
    Blueprint,
    Flask,
    abort,
    flash,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import contains_eager, joinedload, selectinload

from portal.auth.models import Role, RoleGrant, User
from portal.core import hooks
from portal.core.forms import ActionForm, ConfirmForm
from portal.core.listing import ListSpec, list_page
from portal.core.permissions import check, require
from portal.core.web import commit_or_flash, form_page, load, login_required, post_action
from portal.extensions import db
from portal.institutions.models import Institution
from portal.proposals import attachments
from portal.proposals.models import (
    Attachment,
    Call,
    CallState,
    Proposal,
    ProposalState,
    ProposalVersion,
    TeamMember,
)
from portal.reviews import services
from portal.reviews.forms import AssignForm, DeclareConflictForm, ProfileForm, WaiveForm
from portal.reviews.models import (
    OPEN_ASSIGNMENTS,
    Assignment,
    AssignmentState,
    DeclaredConflict,
    ReviewerProfile,
)
from portal.reviews.permissions import (
    assignments_to_answer,
    can_manage_reviews,
    can_see_ranking,
    can_view_assignment,
    is_reviewer,
)
from portal.reviews.workflow import ASSIGNMENT_WORKFLOW

#: As portal.proposals.attachment_views (a view module of another domain, which the layering rule
#: keeps us from importing): a download is a file to save, never a page.


bp = Blueprint("reviews", __name__)

#: Only reviewers keep a reviewer profile.
NOT_A_REVIEWER = "Only people in the reviewer pool have a reviewer profile."

POOL = ListSpec(
    search=(User.display_name, User.email),
    sorts={"name": (User.display_name, User.id)},
    placeholder="Name or e-mail",
)


# --- a reviewer's profile and declared conflicts ------------------------------------------------


def _institutions() -> Sequence[Institution]:
    return db.session.scalars(select(Institution).order_by(Institution.name, Institution.id)).all()


def _profile_of(user: User) -> ReviewerProfile | None:
    return db.session.scalar(select(ReviewerProfile).where(ReviewerProfile.user_id == user.id))


def _declared_of(user: User) -> Sequence[DeclaredConflict]:
    return db.session.scalars(
        select(DeclaredConflict)
        .where(DeclaredConflict.reviewer_id == user.id)
        .options(selectinload(DeclaredConflict.person), selectinload(DeclaredConflict.institution))
        .order_by(DeclaredConflict.id)
    ).all()


def _saved_profile_form(user: User) -> ProfileForm:
    saved = _profile_of(user)
    if saved is None:
        return ProfileForm.for_profile([], 5)
    return ProfileForm.for_profile(saved.expertise, saved.load_limit)


def _profile_page(
    form: ProfileForm, conflict_form: DeclareConflictForm, status: int
) -> ResponseReturnValue:
    return (
        render_template(
            "reviews/profile.html",
            form=form,
            conflict_form=conflict_form,
            declared=_declared_of(current_user),
            remove_form=ConfirmForm(),
        ),
        status,
    )


@bp.route("/reviews/profile", methods=["GET", "POST"])
@login_required
def profile() -> ResponseReturnValue:
    """The reviewer's expertise and load limit, and the conflicts they declared."""
    require(is_reviewer(current_user), NOT_A_REVIEWER)
    form = ProfileForm() if request.method == "POST" else _saved_profile_form(current_user)
    conflict_form = DeclareConflictForm(formdata=None, institutions=_institutions())
    return form_page(
        form,
        lambda: services.save_profile(
            db.session,
            current_user,
            actor=current_user,
            expertise=form.words(),
            load_limit=form.load_limit.data or 0,
        ),
        template="reviews/profile.html",
        done=lambda p: ("Your reviewer profile is saved.", url_for(".profile")),
        conflict_form=conflict_form,
        declared=_declared_of(current_user),
        remove_form=ConfirmForm(),
    )


@bp.post("/reviews/profile/conflicts")
@login_required
def declare_conflict() -> ResponseReturnValue:
    """Declare a person or an institution the reviewer must not review."""
    require(is_reviewer(current_user), NOT_A_REVIEWER)
    form = _saved_profile_form(current_user)
    conflict_form = DeclareConflictForm(institutions=_institutions())
    if not conflict_form.validate_on_submit():
        return _profile_page(form, conflict_form, 422)
    person_id = institution_id = None
    email = (conflict_form.email.data or "").strip()
    if email:
        person = db.session.scalar(
            select(User).where(func.lower(User.email) == email.lower()).order_by(User.id).limit(1)
        )
        if person is None:
            conflict_form.email.errors.append("Nobody on the portal has this e-mail address.")
            return _profile_page(form, conflict_form, 422)
        person_id = person.id
    else:
        institution_id = int(conflict_form.institution_id.data)
    ok, _ = commit_or_flash(
        lambda: services.declare_conflict(
            db.session,
            current_user,
            actor=current_user,
            person_id=person_id,
            institution_id=institution_id,
            reason=conflict_form.reason.data or "",
        )
    )
    if ok:
        flash("The conflict is declared: you will not be asked to review them.", "success")
    return redirect(url_for(".profile"), 302 if ok else 303)


@bp.post("/reviews/profile/conflicts/<int:conflict_id>/remove")
@login_required
def remove_conflict(conflict_id: int) -> ResponseReturnValue:
    declared = load(DeclaredConflict, conflict_id)
    if declared.reviewer_id != current_user.id:
        abort(404)  # not yours: as if it did not exist
    return post_action(
        ConfirmForm(),
        lambda: services.remove_declared_conflict(db.session, declared, actor=current_user),
        back=url_for(".profile"),
        done="The declared conflict is removed.",
    )


# --- the pool, for program staff ----------------------------------------------------------------


def _reviewers() -> Any:
    return (
        select(User)
        .where(
            User.id.in_(select(RoleGrant.user_id).where(RoleGrant.role == Role.REVIEWER)),
            User.is_disabled.is_(False),
        )
        .distinct()
    )


@bp.get("/reviews/pool")
@login_required
def pool() -> ResponseReturnValue:
    """Every reviewer with their expertise and their open assignments per call under review."""
    check(can_manage_reviews, current_user)
    listing = list_page(_reviewers(), POOL)
    ids = [u.id for u in listing.page.items]
    profiles = {
        p.user_id: p
        for p in db.session.scalars(select(ReviewerProfile).where(ReviewerProfile.user_id.in_(ids)))
    }
    rows = db.session.execute(
        select(Assignment.reviewer_id, Proposal.call_id, func.count())
        .join(Proposal, Proposal.id == Assignment.proposal_id)
        .join(Call, Call.id == Proposal.call_id)
        .where(
            Assignment.reviewer_id.in_(ids),
            Assignment.state.in_(OPEN_ASSIGNMENTS),
            Call.state.in_([CallState.OPEN, CallState.CLOSED]),
        )
        .group_by(Assignment.reviewer_id, Proposal.call_id)
        .order_by(Proposal.call_id)
    ).all()
    calls = {
        c.id: c for c in db.session.scalars(select(Call).where(Call.id.in_({r[1] for r in rows})))
    }
    loads: dict[int, list[tuple[Call, int]]] = {}
    for reviewer_id, call_id, n in rows:
        loads.setdefault(reviewer_id, []).append((calls[call_id], int(n)))
    return render_template(
        "reviews/pool.html",
        page=listing.page,
        form=listing.form,
        profiles=profiles,
        loads=loads,
    )


# --- assigning reviewers to a proposal ----------------------------------------------------------


def _staff_proposal(proposal_id: int) -> Proposal:
    check(can_manage_reviews, current_user)
    return load(
        Proposal,
        proposal_id,
        None,
        selectinload(Proposal.call),
        selectinload(Proposal.institution),
        selectinload(Proposal.team).selectinload(TeamMember.user),
    )


def _assign_page(
    proposal: Proposal,
    form: AssignForm | None = None,
    waive_form: WaiveForm | None = None,
    status: int = 200,
) -> ResponseReturnValue:
    current = db.session.scalars(
        select(Assignment)
        .where(Assignment.proposal_id == proposal.id)
        .options(selectinload(Assignment.reviewer))
        .order_by(Assignment.id)
    ).all()
    suggested = services.suggestions(db.session, proposal)
    return render_template(
        "reviews/assign.html",
        proposal=proposal,
        current=current,
        suggestions=suggested,
        open_count=sum(1 for a in current if a.state in OPEN_ASSIGNMENTS),
        assignable=proposal.state in (ProposalState.SUBMITTED, ProposalState.IN_REVIEW),
        form=form or AssignForm(formdata=None),
        waive_form=waive_form or WaiveForm(formdata=None),
        remove_form=ActionForm(formdata=None),
    ), status


def _reviewer(raw: str | None) -> User:
    """The reviewer a form names (a 404 for an id that is no user)."""
    try:
        ident = int(raw or "")
    except ValueError:
        abort(404)
    return load(User, ident)


@bp.route("/reviews/proposals/<int:proposal_id>/assign", methods=["GET", "POST"])
@login_required
def assign(proposal_id: int) -> ResponseReturnValue:
    """The proposal's assignments and the reviewers suggested for it (conflicted ones last, with
    their reasons and no button); a POST assigns one reviewer."""
    proposal = _staff_proposal(proposal_id)
    form = AssignForm()
    if not form.is_submitted():
        return _assign_page(proposal, form)
    if not form.validate():
        return _assign_page(proposal, form, status=422)
    reviewer = _reviewer(form.reviewer_id.data)
    due = form.due_on.data
    due_at = dt.datetime.combine(due, dt.time(23, 59), tzinfo=dt.UTC) if due else None
    ok, assignment = commit_or_flash(
        lambda: services.assign(db.session, proposal, reviewer, actor=current_user, due_at=due_at)
    )
    if ok and assignment is not None:
        flash(f"{reviewer.display_name} is asked to review it.", "success")
    return redirect(url_for(".assign", proposal_id=proposal.id), 302 if ok else 303)


@bp.post("/reviews/proposals/<int:proposal_id>/waivers")
@login_required
def waive(proposal_id: int) -> ResponseReturnValue:
    """Waive a reviewer's conflict with the proposal, with a written reason."""
    proposal = _staff_proposal(proposal_id)
    form = WaiveForm()
    if not form.validate_on_submit():
        return _assign_page(proposal, waive_form=form, status=422)
    reviewer = _reviewer(form.reviewer_id.data)
    return post_action(
        form,
        lambda: services.waive_conflict(
            db.session, proposal, reviewer, actor=current_user, reason=form.reason.data or ""
        ),
        back=url_for(".assign", proposal_id=proposal.id),
        done=f"{reviewer.display_name}'s conflict is waived; the reason is in the history.",
    )


# --- one assignment -----------------------------------------------------------------------------


def _visible_assignment(assignment_id: int) -> Assignment:
    """The assignment, for its reviewer (without a blocking conflict), staff and the proposal's
    deciders; a 404 for everyone else, so nobody learns which ids exist."""
    assignment = load(
        Assignment,
        assignment_id,
        None,
        joinedload(Assignment.proposal).joinedload(Proposal.call),
        joinedload(Assignment.reviewer),
    )
    if not can_view_assignment(current_user, assignment):
        abort(404)
    return assignment


def _shows_proposal(assignment: Assignment) -> bool:
    """The reviewer reads the proposal while the assignment is open (invited or accepted); staff
    and deciders always. A declined or withdrawn assignment shows its state only."""
    return assignment.state in OPEN_ASSIGNMENTS or assignment.reviewer_id != current_user.id


def _frozen(assignment: Assignment) -> ProposalVersion | None:
    proposal = assignment.proposal
    return db.session.scalar(
        select(ProposalVersion).where(
            ProposalVersion.proposal_id == proposal.id,
            ProposalVersion.number == proposal.version,
        )
    )


@bp.get("/reviews/assignments/<int:assignment_id>")
@login_required
def assignment(assignment_id: int) -> ResponseReturnValue:
    """The proposal as submitted (its frozen version), and accept / decline / declare a conflict."""
    a = _visible_assignment(assignment_id)
    shown = _shows_proposal(a)
    return render_template(
        "reviews/assignment.html",
        assignment=a,
        proposal=a.proposal,
        version=_frozen(a) if shown else None,
        actions=ASSIGNMENT_WORKFLOW.available(current_user, a),
        is_reviewer_of=a.reviewer_id == current_user.id,
    )


@bp.post("/reviews/assignments/<int:assignment_id>/answer")
@login_required
def answer(assignment_id: int) -> ResponseReturnValue:
    """Accept, decline or declare a conflict (the reviewer), or withdraw the assignment (staff)."""
    a = _visible_assignment(assignment_id)
    form = ActionForm()
    action = form.action.data or ""
    staff_side = a.reviewer_id != current_user.id
    back = (
        url_for(".assign", proposal_id=a.proposal_id)
        if staff_side
        else url_for(".assignment", assignment_id=a.id)
    )
    messages = {
        "accept": "Accepted: thank you. The review is due on {due}.",
        "decline": "Declined; program staff will ask someone else.",
        "declare_conflict": "Your conflict is declared and the assignment withdrawn.",
        "remove": "The assignment is withdrawn; the reviewer is told.",
    }
    return post_action(
        form,
        lambda: services.answer(db.session, a, action, actor=current_user, reason=form.reason.data),
        back=back,
        done=lambda done: messages.get(action, "Done.").format(
            due=done.due_at.strftime("%d %B %Y")
        ),
    )


@bp.get("/reviews/assignments/<int:assignment_id>/attachments/<int:attachment_id>")
@login_required
def assignment_attachment(assignment_id: int, attachment_id: int) -> ResponseReturnValue:
    """An attachment of the frozen version, as a download, to whoever may see the assignment."""
    a = _visible_assignment(assignment_id)
    if not _shows_proposal(a):
        abort(404)
    version = _frozen(a)
    frozen_ids = {x.get("id") for x in (version.snapshot.get("attachments", []) if version else [])}
    attachment = load(Attachment, attachment_id)
    if attachment.proposal_id != a.proposal_id or attachment.id not in frozen_ids:
        abort(404)
    return attachments.download_response(attachment)


# --- navigation and dashboard -------------------------------------------------------------------


def _waiting_for_reviewers() -> Any:
    """Proposals in review (or submitted) with fewer open assignments than their call wants."""
    open_count = (
        select(func.count())
        .where(Assignment.proposal_id == Proposal.id, Assignment.state.in_(OPEN_ASSIGNMENTS))
        .correlate(Proposal)
        .scalar_subquery()
    )
    return (
        select(Proposal, open_count)
        .join(Call, Call.id == Proposal.call_id)
        .where(
            Proposal.state.in_([ProposalState.SUBMITTED, ProposalState.IN_REVIEW]),
            open_count < Call.reviews_wanted,
        )
        .options(selectinload(Proposal.call))
        .order_by(Proposal.submitted_at, Proposal.id)
    )


def register_ui(app: Flask) -> None:
    """Navigation entries and dashboard cards."""
    from portal.core import navigation
    from portal.core.navigation import NavItem, Panel

    # The review queue is review_views.py's; until it is there, "Reviews" leads to the profile.
    has_queue = "reviews.queue" in app.view_functions
    navigation.register(
        NavItem(
            "reviews.queue" if has_queue else "reviews.profile",
            "Reviews",
            lambda u: is_reviewer(u),
            order=52,
        )
    )
    navigation.register(NavItem("reviews.pool", "Reviewer pool", can_manage_reviews, order=55))

    def my_reviews(user: Any) -> dict[str, Any] | None:
        if not is_reviewer(user):
            return None
        rows = db.session.scalars(
            assignments_to_answer(user)
            .options(contains_eager(Assignment.proposal).joinedload(Proposal.call))
            .order_by(Assignment.due_at, Assignment.id)
            .limit(20)
        ).all()
        return {
            "invited": [a for a in rows if a.state == AssignmentState.INVITED],
            "accepted": [a for a in rows if a.state == AssignmentState.ACCEPTED],
            "has_queue": has_queue,
        }

    def needs_reviewers(user: Any) -> dict[str, Any] | None:
        if not can_manage_reviews(user):
            return None
        rows = db.session.execute(_waiting_for_reviewers().limit(10)).all()
        return {"rows": [(p, int(n)) for p, n in rows]}

    navigation.register_panel(Panel("my_reviews", "reviews/panels/my_reviews.html", my_reviews, 20))
    navigation.register_panel(
        Panel("needs_reviewers", "reviews/panels/needs_reviewers.html", needs_reviewers, 30)
    )
    hooks.register_section(
        Call, hooks.Section("ranking", "reviews/_call_section.html", _ranking_section)
    )


def _ranking_section(call: Call, user: Any) -> dict[str, Any] | None:
    """The call page's link to its ranking, for those who may see it."""
    return {"call": call} if can_see_ranking(user, call) else None
