"""Institution pages: the directory, one institution, registration, editing, status changes."""

from __future__ import annotations

from flask import Blueprint, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import func, or_, select
from sqlalchemy.orm import selectinload

from portal.core import audit
from portal.core.pagination import paginate
from portal.core.permissions import require
from portal.core.web import commit_or_flash, login_required
from portal.extensions import db
from portal.institutions import services
from portal.institutions.forms import InstitutionFilterForm, InstitutionForm, TransitionForm
from portal.institutions.models import (
    Affiliation,
    AffiliationState,
    Institution,
    InstitutionDomain,
    InstitutionState,
)
from portal.institutions.permissions import (
    can_edit_institution,
    can_register_institution,
    can_view_institution,
    can_view_institution_history,
    visible_institutions,
)
from portal.institutions.workflow import TRANSITIONS

bp = Blueprint("institutions", __name__, url_prefix="/institutions")


def _get_visible(institution_id: int) -> Institution:
    inst = db.session.get(Institution, institution_id)
    if inst is None:
        abort(404)
    require(can_view_institution(current_user, inst), "You cannot see this institution.")
    return inst


@bp.get("/")
@login_required
def index() -> ResponseReturnValue:
    form = InstitutionFilterForm(request.args)
    q = visible_institutions(current_user).options(selectinload(Institution.domains))
    if form.validate():
        if form.q.data:
            term = f"%{form.q.data.strip().lower()}%"
            by_domain = select(InstitutionDomain.institution_id).where(
                InstitutionDomain.domain.like(term)
            )
            q = q.where(
                or_(
                    func.lower(Institution.name).like(term),
                    func.lower(Institution.short_name).like(term),
                    Institution.id.in_(by_domain),
                )
            )
        if form.state.data:
            q = q.where(Institution.state == InstitutionState(form.state.data))
    page = paginate(q.order_by(Institution.name, Institution.id))
    member_counts = dict(
        db.session.execute(
            select(Affiliation.institution_id, func.count())
            .where(
                Affiliation.institution_id.in_([i.id for i in page.items]),
                Affiliation.state == AffiliationState.ACTIVE,
            )
            .group_by(Affiliation.institution_id)
        ).all()
    )
    return render_template(
        "institutions/index.html",
        page=page,
        form=form,
        member_counts=member_counts,
        can_register=can_register_institution(current_user),
    )


@bp.get("/<int:institution_id>")
@login_required
def detail(institution_id: int) -> ResponseReturnValue:
    inst = _get_visible(institution_id)
    members = db.session.scalars(
        select(Affiliation)
        .where(Affiliation.institution_id == inst.id, Affiliation.state == AffiliationState.ACTIVE)
        .options(selectinload(Affiliation.user))
        .order_by(Affiliation.id)
        .limit(50)
    ).all()
    history = (
        db.session.scalars(audit.events_for(inst).limit(20)).all()
        if can_view_institution_history(current_user, inst)
        else []
    )
    return render_template(
        "institutions/detail.html",
        inst=inst,
        members=members,
        history=history,
        transitions=TRANSITIONS,
        transition_form=TransitionForm(),
        can_edit=can_edit_institution(current_user, inst),
    )


@bp.route("/new", methods=["GET", "POST"])
@login_required
def new() -> ResponseReturnValue:
    require(can_register_institution(current_user), "Only program staff can register institutions.")
    form = InstitutionForm()
    if form.validate_on_submit():
        inst = commit_or_flash(
            lambda: services.register_institution(db.session, actor=current_user, **form.details())
        )
        if inst is not None:
            flash(f"{inst.name} is registered and awaits review.", "success")
            return redirect(url_for(".detail", institution_id=inst.id))
    return render_template("institutions/form.html", form=form, inst=None), (
        422 if request.method == "POST" else 200
    )


@bp.route("/<int:institution_id>/edit", methods=["GET", "POST"])
@login_required
def edit(institution_id: int) -> ResponseReturnValue:
    inst = _get_visible(institution_id)
    require(can_edit_institution(current_user, inst), "You cannot edit this institution.")
    form = InstitutionForm(obj=inst)
    if request.method == "GET":
        form.email_domains.data = "\n".join(d.domain for d in inst.domains)
    if form.validate_on_submit() and commit_or_flash(
        lambda: services.update_institution(db.session, inst, actor=current_user, **form.details())
    ):
        flash("Saved.", "success")
        return redirect(url_for(".detail", institution_id=inst.id))
    return render_template("institutions/form.html", form=form, inst=inst), (
        422 if request.method == "POST" else 200
    )


@bp.post("/<int:institution_id>/transition")
@login_required
def transition(institution_id: int) -> ResponseReturnValue:
    inst = _get_visible(institution_id)
    form = TransitionForm()
    if not form.validate_on_submit():
        abort(400, description="The status change form was incomplete.")
    if commit_or_flash(
        lambda: services.transition(
            db.session, inst, form.action.data or "", actor=current_user, reason=form.reason.data
        )
    ):
        flash(f"{inst.name} is now {inst.state.label.lower()}.", "success")
        return redirect(url_for(".detail", institution_id=inst.id))
    return redirect(url_for(".detail", institution_id=inst.id)), 303  # refused: the flash says why
