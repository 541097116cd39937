"""Affiliation requests: a person asks to join an institution when their identity provider cannot
vouch for them; the institution's signing official approves or rejects."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import select
from sqlalchemy.orm import selectinload

from portal.auth.models import Role
from portal.core.pagination import paginate
from portal.core.permissions import require
from portal.core.web import commit_or_flash, login_required
from portal.extensions import db
from portal.institutions import services
from portal.institutions.forms import (
    AffiliationDecisionForm,
    AffiliationRequestForm,
    AffiliationWithdrawForm,
)
from portal.institutions.models import Affiliation, AffiliationState, Institution
from portal.institutions.permissions import (
    REQUESTABLE_STATES,
    can_decide_affiliation,
    decidable_affiliations,
)

bp = Blueprint("affiliations", __name__, url_prefix="/affiliations")


def _requestable() -> list[tuple[int, str]]:
    rows = db.session.execute(
        select(Institution.id, Institution.name)
        .where(Institution.state.in_(REQUESTABLE_STATES))
        .order_by(Institution.name)
    ).all()
    return [(i, n) for i, n in rows]


@bp.get("/")
@login_required
def index() -> ResponseReturnValue:
    """Your own affiliations and requests; for signing officials, the requests to decide."""
    mine = db.session.scalars(
        select(Affiliation)
        .where(Affiliation.user_id == current_user.id)
        .options(selectinload(Affiliation.institution))
        .order_by(Affiliation.id.desc())
    ).all()
    state = request.args.get("state", "requested")
    if state not in {s.value for s in AffiliationState}:
        state = "requested"
    q = (
        decidable_affiliations(current_user)
        .where(Affiliation.state == AffiliationState(state))
        .options(selectinload(Affiliation.user), selectinload(Affiliation.institution))
    )
    page = paginate(q.order_by(Affiliation.requested_at, Affiliation.id))
    return render_template(
        "institutions/affiliations.html",
        mine=mine,
        page=page,
        state=state,
        is_official=bool(current_user.institution_ids_for(Role.SIGNING_OFFICIAL)),
        decision_form=AffiliationDecisionForm(),
        withdraw_form=AffiliationWithdrawForm(),
    )


@bp.route("/request", methods=["GET", "POST"])
@login_required
def request_form() -> ResponseReturnValue:
    form = AffiliationRequestForm(institutions=_requestable())
    if form.validate_on_submit():
        inst = db.session.get(Institution, form.institution_id.data)
        if inst is None:
            abort(404)
        if commit_or_flash(
            lambda: services.request_affiliation(
                db.session, inst, actor=current_user, title=form.title.data
            )
        ):
            flash(f"Your request to join {inst.name} is sent to its signing official.", "success")
            return redirect(url_for(".index"))
    return render_template("institutions/affiliation_request.html", form=form), (
        422 if request.method == "POST" else 200
    )


def _get(affiliation_id: int) -> Affiliation:
    aff = db.session.get(Affiliation, affiliation_id)
    if aff is None:
        abort(404)
    return aff


@bp.post("/<int:affiliation_id>/decide")
@login_required
def decide(affiliation_id: int) -> ResponseReturnValue:
    aff = _get(affiliation_id)
    require(
        can_decide_affiliation(current_user, aff),
        "Only the institution's signing official decides on requests to join it.",
    )
    form = AffiliationDecisionForm()
    if not form.validate_on_submit():
        abort(400, description="The decision form was incomplete.")
    if commit_or_flash(
        lambda: services.decide_affiliation(
            db.session,
            aff,
            actor=current_user,
            approve=form.decision.data == "approve",
            note=form.note.data,
        )
    ):
        flash(f"{aff.user.display_name}: {aff.state.label.lower()}.", "success")
        return redirect(url_for(".index"))
    return redirect(url_for(".index")), 303  # refused: the flash says why


@bp.post("/<int:affiliation_id>/withdraw")
@login_required
def withdraw(affiliation_id: int) -> ResponseReturnValue:
    aff = _get(affiliation_id)
    form = AffiliationWithdrawForm()
    if not form.validate_on_submit():
        abort(400, description="The form has expired. Reload the page and try again.")
    if commit_or_flash(
        lambda: services.withdraw_affiliation_request(db.session, aff, actor=current_user)
    ):
        flash("Your request is withdrawn.", "success")
        return redirect(url_for(".index"))
    return redirect(url_for(".index")), 303  # refused: the flash says why
