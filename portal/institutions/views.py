"""Institution pages: the directory, one institution, registration, editing, status changes, and
proving its e-mail domains."""

from __future__ import annotations

from flask import Blueprint, abort, current_app, render_template, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import and_, func, or_, select
from sqlalchemy.orm import selectinload

from portal.core.audit import AuditEvent
from portal.core.forms import ActionForm, ConfirmForm
from portal.core.listing import ListSpec, list_page
from portal.core.permissions import check
from portal.core.web import form_page, load, login_required, post_action
from portal.extensions import db
from portal.institutions import domains, services
from portal.institutions.forms import InstitutionForm
from portal.institutions.models import (
    Affiliation,
    AffiliationState,
    Institution,
    InstitutionDomain,
    InstitutionState,
)
from portal.institutions.permissions import (
    can_edit_institution,
    can_edit_vetted_details,
    can_register_institution,
    can_view_institution,
    can_view_institution_history,
    visible_institutions,
)
from portal.institutions.workflow import INSTITUTION_WORKFLOW

bp = Blueprint("institutions", __name__, url_prefix="/institutions")

DIRECTORY = ListSpec(
    search=services.matching_institutions,
    state_column=Institution.state,
    states=InstitutionState,
    sorts={"name": (Institution.name, Institution.id)},
    placeholder="Name or e-mail domain",
)


@bp.get("/")
@login_required
def index() -> ResponseReturnValue:
    listing = list_page(
        visible_institutions(current_user).options(selectinload(Institution.domains)), DIRECTORY
    )
    ids = [i.id for i in listing.page.items]
    member_counts = dict(
        db.session.execute(
            select(Affiliation.institution_id, func.count())
            .where(
                Affiliation.institution_id.in_(ids), Affiliation.state == AffiliationState.ACTIVE
            )
            .group_by(Affiliation.institution_id)
        ).all()
    )
    return render_template(
        "institutions/index.html",
        page=listing.page,
        form=listing.form,
        member_counts=member_counts,
        can_register=can_register_institution(current_user),
    )


@bp.get("/<int:institution_id>")
@login_required
def detail(institution_id: int) -> ResponseReturnValue:
    inst = load(Institution, institution_id, can_view_institution)
    members = db.session.scalars(
        select(Affiliation)
        .where(Affiliation.institution_id == inst.id, Affiliation.state == AffiliationState.ACTIVE)
        .options(selectinload(Affiliation.user))
        .order_by(Affiliation.id)
        .limit(50)
    ).all()
    history = (
        db.session.scalars(
            select(AuditEvent)
            .where(
                or_(
                    and_(
                        AuditEvent.object_type == Institution.__tablename__,
                        AuditEvent.object_id == inst.id,
                    ),
                    and_(
                        AuditEvent.object_type == InstitutionDomain.__tablename__,
                        AuditEvent.object_id.in_([d.id for d in inst.all_domains]),
                    ),
                )
            )
            .order_by(AuditEvent.id.desc())
            .limit(20)
        ).all()
        if can_view_institution_history(current_user, inst)
        else []
    )
    return render_template(
        "institutions/detail.html",
        inst=inst,
        members=members,
        history=history,
        actions=INSTITUTION_WORKFLOW.available(current_user, inst),
        can_edit=can_edit_institution(current_user, inst),
    )


@bp.route("/new", methods=["GET", "POST"])
@login_required
def new() -> ResponseReturnValue:
    check(can_register_institution, current_user)
    form = InstitutionForm()
    return form_page(
        form,
        lambda: services.register_institution(db.session, actor=current_user, **form.details()),
        template="institutions/form.html",
        done=lambda inst: (
            f"{inst.name} is registered and awaits review.",
            url_for(".detail", institution_id=inst.id),
        ),
        inst=None,
    )


@bp.route("/<int:institution_id>/edit", methods=["GET", "POST"])
@login_required
def edit(institution_id: int) -> ResponseReturnValue:
    inst = load(Institution, institution_id, can_view_institution)
    check(can_edit_institution, current_user, inst)
    form = InstitutionForm(
        obj=inst,
        domains=[d.domain for d in inst.all_domains],
        vetted_locked=not can_edit_vetted_details(current_user, inst),
    )
    return form_page(
        form,
        lambda: services.update_institution(db.session, inst, actor=current_user, **form.details()),
        template="institutions/form.html",
        done=lambda i: ("Saved.", url_for(".detail", institution_id=i.id)),
        inst=inst,
    )


@bp.post("/<int:institution_id>/transition")
@login_required
def transition(institution_id: int) -> ResponseReturnValue:
    inst = load(Institution, institution_id, can_view_institution)
    form = ActionForm()
    return post_action(
        form,
        lambda: services.transition(
            db.session, inst, form.action.data or "", actor=current_user, reason=form.reason.data
        ),
        back=url_for(".detail", institution_id=inst.id),
        done=lambda i: f"{i.name} is now {i.state.label.lower()}.",
    )


def _domain(institution_id: int, domain_id: int) -> InstitutionDomain:
    """The domain ``domain_id`` of the institution ``institution_id`` (which the current user may
    see); 404 when it is another institution's."""
    inst = load(Institution, institution_id, can_view_institution)
    domain = load(InstitutionDomain, domain_id)
    if domain.institution_id != inst.id:
        abort(404)
    return domain


def _txt_lookup() -> domains.TxtLookup:
    """The DNS TXT look-up for this app: a stand-in registered by tests, else dnspython with the
    configured nameservers."""
    stand_in: domains.TxtLookup | None = current_app.extensions.get(domains.LOOKUP_EXTENSION)
    return stand_in or domains.dns_txt_lookup(
        current_app.config["DNS_NAMESERVERS"], float(current_app.config["DNS_TIMEOUT_SECONDS"])
    )


@bp.post("/<int:institution_id>/domains/<int:domain_id>/check")
@login_required
def check_domain(institution_id: int, domain_id: int) -> ResponseReturnValue:
    domain = _domain(institution_id, domain_id)
    return post_action(
        ConfirmForm(),
        lambda: domains.check_domain_dns(
            db.session, domain, actor=current_user, lookup=_txt_lookup()
        ),
        back=url_for(".detail", institution_id=institution_id),
        done=lambda d: f"{d.domain} is verified: its DNS record was found.",
    )


@bp.post("/<int:institution_id>/domains/<int:domain_id>/verify")
@login_required
def verify_domain(institution_id: int, domain_id: int) -> ResponseReturnValue:
    domain = _domain(institution_id, domain_id)
    return post_action(
        ConfirmForm(),
        lambda: domains.verify_domain_by_staff(db.session, domain, actor=current_user),
        back=url_for(".detail", institution_id=institution_id),
        done=lambda d: f"{d.domain} is verified by program staff.",
    )


@bp.post("/<int:institution_id>/domains/<int:domain_id>/remove")
@login_required
def remove_domain(institution_id: int, domain_id: int) -> ResponseReturnValue:
    domain = _domain(institution_id, domain_id)
    name = domain.domain
    return post_action(
        ConfirmForm(),
        lambda: domains.remove_domain(db.session, domain, actor=current_user),
        back=url_for(".detail", institution_id=institution_id),
        done=f"{name} is removed.",
    )
