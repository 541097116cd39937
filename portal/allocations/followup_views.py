"""Follow-up request pages: asking for more hours, more time or a renewal, or giving hours back
(one form per kind, on an allocation); one request with its decision (approve with a note,
decline with the reason) or its withdrawal; the deciders' "Requests to decide"; and, for program
staff, the allocation reviewers of each resource and call with their ceilings. Also the requests
section of the allocation's page and the deciders' dashboard card."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Flask, abort, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import select
from sqlalchemy.orm import joinedload, selectinload
from wtforms import DateField, IntegerField, SelectField, TextAreaField
from wtforms.validators import DataRequired, InputRequired, Length, NumberRange, Optional

from portal.allocations import followups
from portal.allocations.models import (
    MAX_EXTENSION_MONTHS,
    Allocation,
    AllocationReviewer,
    FollowUpKind,
    FollowUpRequest,
    FollowUpState,
)
from portal.allocations.permissions import (
    can_assign_allocation_reviewers,
    can_request_follow_up,
    can_view_allocation,
    can_view_follow_up,
    is_allocation_decider,
    requests_to_decide,
)
from portal.auth.models import Role, RoleGrant, User
from portal.core import hooks
from portal.core.errors import ValidationError
from portal.core.forms import ActionForm, ConfirmForm
from portal.core.listing import ListSpec, list_page, matches
from portal.core.permissions import check
from portal.core.web import form_page, load, login_required, post_action
from portal.core.workflow import MAX_REASON
from portal.extensions import db
from portal.proposals.models import Call, CallState, Proposal, Resource

bp = Blueprint("allocation_requests", __name__, url_prefix="/allocations")

K = FollowUpKind

#: Loader options for a request shown with its allocation and project (no query per fact).
REQUEST_DETAIL = (
    joinedload(FollowUpRequest.allocation).joinedload(Allocation.proposal),
    joinedload(FollowUpRequest.allocation).joinedload(Allocation.resource),
    joinedload(FollowUpRequest.allocation).joinedload(Allocation.call_resource),
    joinedload(FollowUpRequest.requested_by),
    joinedload(FollowUpRequest.decided_by),
)

QUEUE = ListSpec(
    search=lambda text: matches(text, Proposal.title, Allocation.account),
    sorts={
        "oldest": (FollowUpRequest.created_at, FollowUpRequest.id),
        "newest": (FollowUpRequest.created_at.desc(), FollowUpRequest.id.desc()),
    },
    placeholder="Project or account",
)


# --- forms -------------------------------------------------------------------------------------

JUSTIFICATION_HELP = "What the project will do with it, and why it was not foreseen."


class _RequestForm(FlaskForm):  # type: ignore[misc]  # flask_wtf is untyped
    justification = TextAreaField(
        "Why the project needs it",
        validators=[DataRequired(), Length(max=followups.MAX_JUSTIFICATION)],
        description=JUSTIFICATION_HELP,
        render_kw={"rows": 5},
    )

    def asked(self) -> dict[str, Any]:
        """The fields as keyword arguments of ``followups.submit_request``."""
        return {"justification": self.justification.data or ""}


class SupplementForm(_RequestForm):
    hours = IntegerField("More GPU-hours", validators=[InputRequired(), NumberRange(min=1)])

    def asked(self) -> dict[str, Any]:
        return {**super().asked(), "hours": self.hours.data}


class ExtensionForm(_RequestForm):
    ends_on = DateField("New end date", validators=[DataRequired()])

    def asked(self) -> dict[str, Any]:
        return {**super().asked(), "ends_on": self.ends_on.data}


class RenewalForm(_RequestForm):
    hours = IntegerField(
        "GPU-hours for the new period", validators=[InputRequired(), NumberRange(min=1)]
    )
    months = IntegerField(
        "Length of the new period, in months", validators=[InputRequired(), NumberRange(1, 60)]
    )

    def asked(self) -> dict[str, Any]:
        return {**super().asked(), "hours": self.hours.data, "months": self.months.data}


class ReturnForm(_RequestForm):
    hours = IntegerField("GPU-hours to give back", validators=[InputRequired(), NumberRange(min=1)])
    justification = TextAreaField(
        "Note (optional)",
        validators=[Optional(), Length(max=followups.MAX_JUSTIFICATION)],
        render_kw={"rows": 3},
    )

    def asked(self) -> dict[str, Any]:
        return {**super().asked(), "hours": self.hours.data}


FORMS: dict[FollowUpKind, type[_RequestForm]] = {
    K.SUPPLEMENT: SupplementForm,
    K.EXTENSION: ExtensionForm,
    K.RENEWAL: RenewalForm,
    K.RETURN: ReturnForm,
}


class ReviewerForm(FlaskForm):  # type: ignore[misc]  # flask_wtf is untyped
    """Assign a reviewer to decide the requests on one resource or one call's allocations."""

    user_id = SelectField("Reviewer", coerce=int, validators=[DataRequired()])
    scope = SelectField(
        "Decides on",
        validators=[DataRequired()],
        description="A resource (every call's allocations on it), or one call (all its resources).",
    )
    ceiling_hours = IntegerField(
        "Ceiling in GPU-hours (optional)",
        validators=[Optional(), NumberRange(min=1)],
        description="The largest request this reviewer decides; larger ones go to program officers.",
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        reviewers = db.session.scalars(
            select(User)
            .where(
                User.is_disabled.is_(False),
                User.id.in_(select(RoleGrant.user_id).where(RoleGrant.role == Role.REVIEWER)),
            )
            .order_by(User.display_name, User.id)
        ).all()
        self.user_id.choices = [(u.id, u.display_name) for u in reviewers]
        resources = db.session.scalars(
            select(Resource).order_by(Resource.gpu_class, Resource.cluster, Resource.id)
        ).all()
        calls = db.session.scalars(
            select(Call).where(Call.state != CallState.DRAFT).order_by(Call.id.desc())
        ).all()
        self.scope.choices = [(f"resource:{r.id}", f"Resource: {r.name}") for r in resources] + [
            (f"call:{c.id}", f"Call: {c.title}") for c in calls
        ]

    def target(self) -> dict[str, Any]:
        """The fields as keyword arguments of ``followups.assign_reviewer``."""
        kind, _, ident = (self.scope.data or "").partition(":")
        model: type[Resource] | type[Call] = Resource if kind == "resource" else Call
        obj = db.session.get(model, int(ident)) if ident.isdigit() else None
        user = db.session.get(User, self.user_id.data) if self.user_id.data else None
        if obj is None or user is None:
            raise ValidationError("Choose a reviewer and a resource or call from the lists.")
        return {
            "user": user,
            "resource": obj if isinstance(obj, Resource) else None,
            "call": obj if isinstance(obj, Call) else None,
            "ceiling_hours": self.ceiling_hours.data,
        }


# --- asking ------------------------------------------------------------------------------------


def _kind(value: str) -> FollowUpKind:
    try:
        return FollowUpKind(value)
    except ValueError:
        abort(404)


@bp.route("/<int:allocation_id>/requests/<kind>", methods=["GET", "POST"])
@login_required
def new(allocation_id: int, kind: str) -> ResponseReturnValue:
    """The form asking for more hours, more time or a renewal, or giving hours back: to the PI
    and co-PIs of the allocation's project."""
    what = _kind(kind)
    allocation = load(
        Allocation,
        allocation_id,
        can_view_allocation,
        joinedload(Allocation.proposal),
        joinedload(Allocation.resource),
        joinedload(Allocation.call_resource),
    )
    check(can_request_follow_up, current_user, allocation)
    form = FORMS[what]()
    if isinstance(form, RenewalForm) and form.months.data is None:
        form.months.data = allocation.resource.period_months

    def done(request: FollowUpRequest) -> tuple[str, str]:
        message = (
            f"{request.hours_asked:,} GPU-hours were given back: the allocation now has "
            f"{allocation.hours:,}."
            if what == K.RETURN
            else "Your request was sent; you will hear of the decision by e-mail."
        )
        return message, url_for(".detail", request_id=request.id)

    return form_page(
        form,
        lambda: followups.submit_request(
            db.session, allocation, what, actor=current_user, **form.asked()
        ),
        template="allocations/requests/new.html",
        done=done,
        allocation=allocation,
        kind=what,
        returnable=followups.returnable_hours(allocation),
        latest_end=followups.latest_extension(allocation),
        max_extension=MAX_EXTENSION_MONTHS,
    )


# --- one request -------------------------------------------------------------------------------


def _visible(request_id: int) -> FollowUpRequest:
    return load(FollowUpRequest, request_id, can_view_follow_up, *REQUEST_DETAIL)


@bp.get("/requests/<int:request_id>")
@login_required
def detail(request_id: int) -> ResponseReturnValue:
    """The request: what it asks, why, the allocation it is about and what is left of the budget;
    the decision, or the buttons of whoever may decide or withdraw it."""
    req = _visible(request_id)
    allocation = req.allocation
    wf = followups.FOLLOW_UP_WORKFLOW
    return render_template(
        "allocations/requests/detail.html",
        req=req,
        allocation=allocation,
        may_decide=wf.may(current_user, req, "approve"),
        withdraw=[a for a in wf.available(current_user, req) if a[0] == "withdraw"],
        decline=wf.transitions["decline"],
        sees_allocation=can_view_allocation(current_user, allocation),
        max_reason=MAX_REASON,
    )


@bp.post("/requests/<int:request_id>/decide")
@login_required
def decide(request_id: int) -> ResponseReturnValue:
    """Approve (with an optional note) or decline (with the reason)."""
    req = _visible(request_id)
    form = ActionForm()
    return post_action(
        form,
        lambda: followups.decide_request(
            db.session, req, form.action.data or "", actor=current_user, note=form.reason.data
        ),
        back=url_for(".detail", request_id=req.id),
        done=lambda r: f"Request {r.state.label.lower()}.",
    )


@bp.post("/requests/<int:request_id>/withdraw")
@login_required
def withdraw(request_id: int) -> ResponseReturnValue:
    """The PI or a co-PI withdraws a request still waiting for a decision."""
    req = _visible(request_id)
    return post_action(
        ConfirmForm(),
        lambda: followups.withdraw_request(db.session, req, actor=current_user),
        back=url_for(".detail", request_id=req.id),
        done="Request withdrawn.",
    )


# --- deciders ----------------------------------------------------------------------------------


def _to_decide(user: Any) -> Any:
    return requests_to_decide(user).options(
        joinedload(FollowUpRequest.allocation).joinedload(Allocation.proposal),
        joinedload(FollowUpRequest.allocation).joinedload(Allocation.resource),
        joinedload(FollowUpRequest.requested_by),
    )


@bp.get("/requests")
@login_required
def queue() -> ResponseReturnValue:
    """The requests waiting for a decision the current user may take, oldest first."""
    listing = list_page(
        _to_decide(current_user).join(Proposal, Proposal.id == Allocation.proposal_id), QUEUE
    )
    return render_template(
        "allocations/requests/queue.html",
        page=listing.page,
        form=listing.form,
        sort=listing.sort,
        sorts=list(QUEUE.sorts),
    )


@bp.route("/reviewers", methods=["GET", "POST"])
@login_required
def reviewers() -> ResponseReturnValue:
    """Program staff assign reviewers to decide the requests on a resource or a call, each with an
    optional ceiling in GPU-hours, and end assignments."""
    check(can_assign_allocation_reviewers, current_user)
    form = ReviewerForm()
    assignments = db.session.scalars(
        select(AllocationReviewer)
        .options(
            selectinload(AllocationReviewer.user),
            selectinload(AllocationReviewer.resource),
            selectinload(AllocationReviewer.call),
        )
        .order_by(AllocationReviewer.id)
    ).all()
    return form_page(
        form,
        lambda: followups.assign_reviewer(db.session, actor=current_user, **form.target()),
        template="allocations/requests/reviewers.html",
        done=lambda a: (
            f"{a.user.display_name} decides requests on {a.scope}"
            + (f" up to {a.ceiling_hours:,} GPU-hours." if a.ceiling_hours else "."),
            url_for(".reviewers"),
        ),
        assignments=assignments,
    )


@bp.post("/reviewers/<int:assignment_id>/remove")
@login_required
def remove_reviewer(assignment_id: int) -> ResponseReturnValue:
    """Program staff end an allocation reviewer's assignment."""
    check(can_assign_allocation_reviewers, current_user)
    assignment = load(AllocationReviewer, assignment_id)
    return post_action(
        ConfirmForm(),
        lambda: followups.unassign_reviewer(db.session, assignment, actor=current_user),
        back=url_for(".reviewers"),
        done="Assignment ended.",
    )


# --- the allocation page's section, navigation, the dashboard card -----------------------------


def allocation_section(allocation: Allocation, user: Any) -> dict[str, Any] | None:
    """The allocation page's requests: each one with its state, and the kinds its PI or a co-PI
    may ask for now."""
    if not can_view_allocation(user, allocation):
        return None
    requests = list(
        db.session.scalars(
            select(FollowUpRequest)
            .where(FollowUpRequest.allocation_id == allocation.id)
            .options(joinedload(FollowUpRequest.requested_by))
            .order_by(FollowUpRequest.id.desc())
        )
    )
    may_ask = can_request_follow_up(user, allocation)
    kinds = followups.kinds_open(db.session, allocation, requests) if may_ask else []
    renews, renewal = followups.renewal_chain(db.session, allocation)
    if not (requests or kinds or renews or renewal):
        return None
    return {
        "allocation": allocation,
        "requests": requests,
        "kinds": kinds,
        "renews": renews,
        "renewal": renewal,
        "submitted": FollowUpState.SUBMITTED,
    }


def _to_decide_panel(user: Any) -> dict[str, Any] | None:
    if not is_allocation_decider(user):
        return None
    rows = db.session.scalars(
        _to_decide(user).order_by(FollowUpRequest.created_at, FollowUpRequest.id).limit(10)
    ).all()
    return {"requests": rows} if rows else None


def register_ui(app: Flask) -> None:
    """Navigation entries, the deciders' dashboard card and the allocation page's section."""
    from portal.core import navigation
    from portal.core.navigation import NavItem, Panel

    for item in (
        NavItem(
            "allocation_requests.queue",
            "Requests to decide",
            is_allocation_decider,
            order=54,
            group="Allocations",
        ),
        NavItem(
            "allocation_requests.reviewers",
            "Allocation reviewers",
            can_assign_allocation_reviewers,
            order=55,
            group="Allocations",
        ),
    ):
        navigation.register(item)
    navigation.register_panel(
        Panel("requests_to_decide", "allocations/requests/_panel.html", _to_decide_panel, 16)
    )
    hooks.register_section(
        Allocation,
        hooks.Section("requests", "allocations/requests/_section.html", allocation_section),
    )
