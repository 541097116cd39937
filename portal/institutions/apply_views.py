"""Applying to become a partner, the onboarding queue, and invitations to be signing official.

``/apply`` is the application form with its ROR look-up (``/apply/ror?q=`` answers the search box's
script; without JavaScript, ``/apply?q=`` lists matches and ``/apply?ror=`` pre-fills the form);
``/applications/`` is program staff's onboarding queue (everyone else: their own applications);
an application's page shows its fields, domains and their proof, the invitations, the
partnership agreement's status, the history and the decisions the viewer may take; the link in an
invitation mail opens ``/applications/invitations/<token>``.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, flash, jsonify, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import Select, and_, func, or_, select
from sqlalchemy.orm import aliased, contains_eager, selectinload

from portal.auth.models import User
from portal.core.audit import AuditEvent
from portal.core.forms import ActionForm
from portal.core.listing import ListSpec, contains, csv_response, filtered, list_page, matches
from portal.core.models import utcnow
from portal.core.permissions import check
from portal.core.web import commit_or_flash, form_page, load, login_required, post_action
from portal.extensions import db
from portal.institutions import onboarding, ror, services
from portal.institutions.apply_forms import ApplicationForm, InvitationAnswerForm, RorSearchForm
from portal.institutions.models import (
    Application,
    Institution,
    InstitutionDomain,
    InstitutionState,
    OfficialInvitation,
    OfficialInvitationState,
)
from portal.institutions.permissions import (
    can_apply,
    can_edit_application,
    can_export_applications,
    can_view_application,
    visible_applications,
)
from portal.institutions.workflow import INSTITUTION_WORKFLOW

bp = Blueprint("applications", __name__)

#: The steps an application's page offers (``join`` follows the partnership agreement; suspending
#: and reinstating a partner are on the institution's page).
PAGE_ACTIONS = ("request_changes", "resubmit", "start_review", "approve", "decline", "withdraw")
#: Audit events shown on an application's page.
HISTORY_LIMIT = 40
#: The queue's "open" tab: applications on their way to partnership.
ONBOARDING = (
    InstitutionState.APPLIED,
    InstitutionState.CHANGES_REQUESTED,
    InstitutionState.UNDER_REVIEW,
    InstitutionState.APPROVED,
)
QUEUE_TABS = {"open": "On the way to partnership", "all": "All"}

Applicant = aliased(User, name="applicant")


def _search(text: str) -> Any:
    """Name, short name, ROR id, applicant, or any claimed domain (pending too)."""
    return or_(
        matches(text, Institution.name, Institution.short_name, Institution.ror_id),
        contains(Applicant.display_name, text),
        Institution.id.in_(
            select(InstitutionDomain.institution_id).where(contains(InstitutionDomain.domain, text))
        ),
    )


#: Waiting longest first; a resent application counts from when it was sent again.
_SUBMITTED = func.coalesce(Application.submitted_at, Institution.created_at)
QUEUE = ListSpec(
    search=_search,
    state_column=Institution.state,
    states=InstitutionState,
    sorts={
        "oldest": (_SUBMITTED, Institution.id),
        "newest": (_SUBMITTED.desc(), Institution.id.desc()),
        "name": (Institution.name, Institution.id),
    },
    placeholder="Name, ROR id, domain or applicant",
)


def _queue(user: Any, tab: str) -> Select[Any]:
    stmt = (
        visible_applications(user)
        .outerjoin(Application, Application.institution_id == Institution.id)
        .outerjoin(Applicant, Applicant.id == Application.applicant_id)
        .options(
            contains_eager(Institution.application).contains_eager(
                Application.applicant.of_type(Applicant)
            ),
            selectinload(Institution.all_domains),
        )
    )
    if tab == "open":
        stmt = stmt.where(Institution.state.in_(ONBOARDING))
    return stmt


# --- applying ------------------------------------------------------------------------------------


@bp.route("/apply", methods=["GET", "POST"])
@login_required
def new() -> ResponseReturnValue:
    """The application form. ``?q=`` searches the ROR subset and lists matches to choose from;
    ``?ror=`` fills the form from one (both without JavaScript)."""
    check(can_apply, current_user)
    search = RorSearchForm(request.args)
    matches_found: list[ror.RorRecord] | None = None
    if search.q.data and search.validate():
        matches_found = ror.lookup(search.q.data)
    chosen = (
        ror.by_id(request.args.get("ror", "")[: ror.MAX_QUERY]) if "ror" in request.args else None
    )
    form = ApplicationForm(prefill=chosen)
    mine = db.session.scalars(
        visible_applications(current_user)
        .join(Application, Application.institution_id == Institution.id)
        .where(Application.applicant_id == current_user.id)
        .order_by(Institution.id.desc())
        .limit(10)
    ).all()
    return form_page(
        form,
        lambda: onboarding.apply(db.session, actor=current_user, **form.details()),
        template="institutions/apply/new.html",
        done=lambda inst: (
            f"Your application for {inst.name} was sent to program staff; the proposed signing "
            "officials were e-mailed a link to accept.",
            url_for(".detail", institution_id=inst.id),
        ),
        search=search,
        matches=matches_found,
        chosen=chosen,
        unknown_ror="ror" in request.args and chosen is None,
        mine=mine,
    )


@bp.get("/apply/ror")
@login_required
def ror_lookup() -> ResponseReturnValue:
    """The ROR subset's matches for ``q`` (name, alias, domain or ROR id) as JSON, for the
    application form's search box."""
    check(can_apply, current_user)
    query = request.args.get("q", "")
    if len(query) > ror.MAX_QUERY:
        return jsonify({"error": f"Type at most {ror.MAX_QUERY} characters.", "results": []}), 400
    return jsonify({"query": query, "results": [r.as_json() for r in ror.lookup(query)]})


# --- the queue -----------------------------------------------------------------------------------


@bp.get("/applications/")
@login_required
def queue() -> ResponseReturnValue:
    """Program staff's onboarding queue — the applications on their way to partnership (or all),
    longest waiting first, with search and a state filter; CSV for staff. Everyone else sees the
    applications they made or sign for."""
    tab = request.args.get("show", "open")
    if tab not in QUEUE_TABS:
        tab = "open"
    stmt = _queue(current_user, tab)
    if request.args.get("format") == "csv":
        check(can_export_applications, current_user)
        return csv_response(
            "applications.csv",
            [
                "id",
                "name",
                "ror_id",
                "country",
                "state",
                "applicant",
                "applicant_email",
                "domains",
                "submitted_at",
                "state_changed_at",
            ],
            db.session.scalars(filtered(stmt, QUEUE)).unique().all(),
            lambda i: [
                i.id,
                i.name,
                i.ror_id or "",
                i.country,
                i.state.value,
                i.application.applicant.display_name
                if i.application and i.application.applicant
                else "",
                i.application.applicant.email if i.application and i.application.applicant else "",
                " ".join(f"{d.domain}({d.state.value})" for d in i.all_domains),
                i.application.submitted_at.isoformat() if i.application else "",
                i.state_changed_at.isoformat(),
            ],
        )
    listing = list_page(stmt, QUEUE)
    return render_template(
        "institutions/apply/queue.html",
        page=listing.page,
        form=listing.form,
        tab=tab,
        tabs=QUEUE_TABS,
        sort=listing.sort,
        sorts=list(QUEUE.sorts),
        now=utcnow(),
        export=can_export_applications(current_user),
        may_apply=can_apply(current_user),
    )


# --- one application -----------------------------------------------------------------------------


def _application(institution_id: int) -> Institution:
    return load(
        Institution,
        institution_id,
        can_view_application,
        selectinload(Institution.all_domains),
        selectinload(Institution.official_invitations).selectinload(OfficialInvitation.accepted_by),
        selectinload(Institution.application).selectinload(Application.applicant),
    )


def _history(inst: Institution) -> tuple[list[AuditEvent], dict[int, str]]:
    """The institution's audit trail with its invitations' (invited, accepted, declined,
    cancelled), newest first."""
    invitations = [i.id for i in inst.official_invitations]
    trail = (
        select(AuditEvent)
        .where(
            or_(
                and_(
                    AuditEvent.object_type == Institution.__tablename__,
                    AuditEvent.object_id == inst.id,
                ),
                and_(
                    AuditEvent.object_type == OfficialInvitation.__tablename__,
                    AuditEvent.object_id.in_(invitations),
                ),
            )
        )
        .order_by(AuditEvent.id.desc())
    )
    events = list(db.session.scalars(trail.limit(HISTORY_LIMIT)))
    ids = {e.actor_id for e in events if e.actor_id is not None}
    names: dict[int, str] = {}
    if ids:
        rows = db.session.execute(select(User.id, User.display_name).where(User.id.in_(ids)))
        names = {uid: name for uid, name in rows}
    return events, names


@bp.get("/applications/<int:institution_id>")
@login_required
def detail(institution_id: int) -> ResponseReturnValue:
    """An application: its fields, domains and their proof, the invitations to be signing
    official, the partnership agreement's status, the history, and the steps the viewer may take."""
    inst = _application(institution_id)
    events, names = _history(inst)
    now = utcnow()
    return render_template(
        "institutions/apply/detail.html",
        inst=inst,
        application=inst.application,
        invitations=inst.official_invitations,
        actions=[
            (name, tr)
            for name, tr in INSTITUTION_WORKFLOW.available(current_user, inst)
            if name in PAGE_ACTIONS
        ],
        events=events,
        names=names,
        now=now,
        expired=lambda i: (
            i.state == OfficialInvitationState.PENDING and onboarding.is_expired(i, now)
        ),
        can_edit=can_edit_application(current_user, inst),
    )


@bp.route("/applications/<int:institution_id>/edit", methods=["GET", "POST"])
@login_required
def edit(institution_id: int) -> ResponseReturnValue:
    """Change the application (the applicant or a signing official, while it is applied or sent
    back for changes)."""
    inst = _application(institution_id)
    check(can_edit_application, current_user, inst)
    form = ApplicationForm(institution=inst)
    return form_page(
        form,
        lambda: onboarding.update_application(
            db.session, inst, actor=current_user, **form.details()
        ),
        template="institutions/apply/edit.html",
        done=lambda i: (
            "The application is saved."
            + (
                " Send it again when it is ready."
                if i.state == InstitutionState.CHANGES_REQUESTED
                else ""
            ),
            url_for(".detail", institution_id=i.id),
        ),
        inst=inst,
    )


def _step(inst: Institution, action: str, reason: str | None) -> Institution:
    """The service call of ``action`` (``decide`` refuses any other action with a reason)."""
    if action == "resubmit":
        return onboarding.resubmit(db.session, inst, actor=current_user)
    if action == "withdraw":
        return services.transition(db.session, inst, action, actor=current_user, reason=reason)
    return onboarding.decide(db.session, inst, action, actor=current_user, reason=reason)


@bp.post("/applications/<int:institution_id>/transition")
@login_required
def transition(institution_id: int) -> ResponseReturnValue:
    """One step on an application (ask for changes, start review, approve, decline, send again,
    withdraw), by whom the workflow lets take it; a refused rule is flashed and nothing changes."""
    inst = _application(institution_id)
    form = ActionForm()
    return post_action(
        form,
        lambda: _step(inst, form.action.data or "", form.reason.data),
        back=url_for(".detail", institution_id=inst.id),
        done=lambda i: f"{i.name}: the application is now {i.state.label.lower()}.",
    )


# --- invitations ---------------------------------------------------------------------------------


@bp.route("/applications/invitations/<token>", methods=["GET", "POST"])
@login_required
def invitation(token: str) -> ResponseReturnValue:
    """The page an invitation mail's link opens: which institution, who invited whom, and (while
    the link works) accept or decline. A link that no longer works says why and what to do."""
    found = onboarding.invitation_for_token(db.session, token)
    if found is None:
        abort(
            404,
            description="This invitation link is not valid. Copy the whole link from the e-mail.",
        )
    if request.method == "POST":
        form = InvitationAnswerForm()
        if not form.validate_on_submit():
            abort(400, description="Choose to accept or to decline the invitation, and try again.")
        answer = form.answer.data
        ok, result = commit_or_flash(
            lambda: (
                onboarding.accept_invitation
                if answer == "accept"
                else onboarding.decline_invitation
            )(db.session, token, actor=current_user)
        )
        if ok and result is not None:
            name = result.institution.name
            if answer == "accept":
                flash(f"You are now a signing official of {name}.", "success")
                return redirect(url_for(".detail", institution_id=result.institution_id))
            flash(f"You declined to be a signing official of {name}.", "success")
        return redirect(url_for(".invitation", token=token))
    return _invitation_page(found)


def _invitation_page(invitation: OfficialInvitation) -> ResponseReturnValue:
    now = utcnow()
    usable = (
        invitation.state == OfficialInvitationState.PENDING
        and not onboarding.is_expired(invitation, now)
        and invitation.institution.state
        not in (InstitutionState.DECLINED, InstitutionState.WITHDRAWN)
    )
    login = (current_user.email or "").lower()
    return render_template(
        "institutions/apply/invitation.html",
        invitation=invitation,
        inst=invitation.institution,
        usable=usable,
        expired=invitation.state == OfficialInvitationState.PENDING
        and onboarding.is_expired(invitation, now),
        other_address=not (current_user.email_verified and login == invitation.email),
        mine=invitation.accepted_by_id == current_user.id,
        accept_form=InvitationAnswerForm(answer="accept", formdata=None),
        decline_form=InvitationAnswerForm(answer="decline", formdata=None),
    ), (200 if usable or invitation.accepted_by_id == current_user.id else 410)
