"""Affiliation requests: a person asks to join an institution when their identity provider cannot
vouch for them; the institution's signing official approves or rejects."""

from __future__ import annotations

from flask import Blueprint, abort, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import exists, select
from sqlalchemy.orm import selectinload

from portal.core.forms import ConfirmForm
from portal.core.listing import paginate
from portal.core.web import form_page, load, login_required, post_action
from portal.extensions import db
from portal.institutions import services
from portal.institutions.forms import AffiliationDecisionForm, AffiliationRequestForm
from portal.institutions.models import Affiliation, AffiliationState, Institution
from portal.institutions.permissions import REQUESTABLE_STATES, decidable_affiliations

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
    """Your own affiliations and requests; for those who decide requests, the requests to decide."""
    mine = db.session.scalars(
        select(Affiliation)
        .where(Affiliation.user_id == current_user.id)
        .options(selectinload(Affiliation.institution))
        .order_by(Affiliation.id.desc())
    ).all()
    state = request.args.get("state", "requested")
    if state not in {s.value for s in AffiliationState}:
        state = "requested"
    decidable = decidable_affiliations(current_user)
    page = paginate(
        decidable.where(Affiliation.state == AffiliationState(state))
        .options(selectinload(Affiliation.user), selectinload(Affiliation.institution))
        .order_by(Affiliation.requested_at, Affiliation.id)
    )
    return render_template(
        "institutions/affiliations.html",
        mine=mine,
        page=page,
        state=state,
        decides=db.session.scalar(select(exists(decidable.subquery()))),
        # Who vouched for each requester's address, and whether they serve the institution.
        checks=services.address_checks(db.session, page.items),
        decision_form=AffiliationDecisionForm(),
        withdraw_form=ConfirmForm(),
    )


@bp.route("/request", methods=["GET", "POST"])
@login_required
def request_form() -> ResponseReturnValue:
    form = AffiliationRequestForm(institutions=_requestable())

    def ask() -> Affiliation:
        inst = db.session.get(Institution, form.institution_id.data)
        if inst is None:
            abort(404)
        return services.request_affiliation(
            db.session, inst, actor=current_user, title=form.title.data
        )

    return form_page(
        form,
        ask,
        template="institutions/affiliation_request.html",
        done=lambda aff: (
            f"Your request to join {aff.institution.name} is sent to its signing official.",
            url_for(".index"),
        ),
    )


@bp.post("/<int:affiliation_id>/decide")
@login_required
def decide(affiliation_id: int) -> ResponseReturnValue:
    aff = load(Affiliation, affiliation_id)
    form = AffiliationDecisionForm()
    return post_action(
        form,
        lambda: services.decide_affiliation(
            db.session, aff, form.decision.data or "", actor=current_user, reason=form.note.data
        ),
        back=url_for(".index"),
        done=lambda a: f"{a.user.display_name}: {a.state.label.lower()}.",
    )


@bp.post("/<int:affiliation_id>/withdraw")
@login_required
def withdraw(affiliation_id: int) -> ResponseReturnValue:
    aff = load(Affiliation, affiliation_id)
    return post_action(
        ConfirmForm(),
        lambda: services.withdraw_affiliation_request(db.session, aff, actor=current_user),
        back=url_for(".index"),
        done="Your request is withdrawn.",
    )
