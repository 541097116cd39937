"""The landing page, the role-aware dashboard and the audit log."""

from __future__ import annotations

from flask import Blueprint, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import func, select
from sqlalchemy.orm import selectinload

from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.pagination import paginate
from portal.core.permissions import can_view_audit_log, is_staff, require
from portal.core.web import login_required
from portal.extensions import db
from portal.institutions.models import Affiliation, AffiliationState, Institution, InstitutionState

bp = Blueprint("core", __name__)


@bp.get("/")
def index() -> ResponseReturnValue:
    if current_user.is_authenticated:
        return redirect(url_for(".dashboard"))
    partners = db.session.scalar(
        select(func.count()).where(Institution.state == InstitutionState.PARTNER)
    )
    return render_template("core/index.html", partner_count=partners, next=request.args.get("next"))


@bp.get("/healthz")
def healthz() -> ResponseReturnValue:
    db.session.execute(select(1))
    return {"status": "ok"}


@bp.get("/dashboard")
@login_required
def dashboard() -> ResponseReturnValue:
    user: User = current_user
    my_affiliations = [a for a in user.affiliations if a.state != AffiliationState.ENDED]
    official_of = user.institution_ids_for(Role.SIGNING_OFFICIAL)
    pending_requests = (
        db.session.scalars(
            select(Affiliation)
            .where(
                Affiliation.institution_id.in_(official_of),
                Affiliation.state == AffiliationState.REQUESTED,
            )
            .options(selectinload(Affiliation.user), selectinload(Affiliation.institution))
            .order_by(Affiliation.requested_at)
            .limit(10)
        ).all()
        if official_of
        else []
    )
    awaiting_review = (
        db.session.scalars(
            select(Institution)
            .where(Institution.state.in_([InstitutionState.APPLIED, InstitutionState.UNDER_REVIEW]))
            .order_by(Institution.state_changed_at)
            .limit(10)
        ).all()
        if is_staff(user)
        else []
    )
    recent_events = (
        db.session.scalars(select(AuditEvent).order_by(AuditEvent.id.desc()).limit(8)).all()
        if can_view_audit_log(user)
        else []
    )
    return render_template(
        "core/dashboard.html",
        my_affiliations=my_affiliations,
        pending_requests=pending_requests,
        awaiting_review=awaiting_review,
        recent_events=recent_events,
    )


@bp.get("/admin/audit")
@login_required
def audit_log() -> ResponseReturnValue:
    require(can_view_audit_log(current_user), "Only administrators can read the audit log.")
    q = select(AuditEvent).order_by(AuditEvent.id.desc())
    action = (request.args.get("action") or "").strip()[:80]
    if action:
        q = q.where(AuditEvent.action.like(f"{action}%"))
    page = paginate(q)
    actor_ids = {e.actor_id for e in page.items if e.actor_id}
    actors = (
        {u.id: u for u in db.session.scalars(select(User).where(User.id.in_(actor_ids)))}
        if actor_ids
        else {}
    )
    return render_template("core/audit.html", page=page, actors=actors, action=action)
