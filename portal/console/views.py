"""The console's pages: one institution's profile, e-mail domains and logins, its requests to
join, members, proposals awaiting endorsement, agreements waiting on its signature, and its
projects — for its signing officials, and for program staff (any institution's).

Every page loads the institution with ``can_use_console`` (404 when there is none, an audited 403
for anyone else) and shows only rows of that institution; each runs a fixed number of queries
whatever the rows (``portal.console.queries``)."""

from __future__ import annotations

from typing import Any

from flask import Blueprint, abort, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy.orm import selectinload

from portal.agreements.models import Agreement
from portal.auth.models import IdentityProvider, ProviderInstitution, ProviderKind, User
from portal.console import queries, services
from portal.console.forms import DecisionForm, EntityIdForm, NewMappingForm
from portal.console.permissions import (
    can_map_login,
    can_open_consoles,
    can_use_console,
    consoles_of,
)
from portal.core.dates import add_months
from portal.core.listing import ListSpec, csv_response, filtered, list_page
from portal.core.permissions import check
from portal.core.web import form_page, load, login_required, post_action
from portal.extensions import db
from portal.institutions import services as institution_services
from portal.institutions.models import Affiliation, Institution, InstitutionState
from portal.proposals.models import Proposal

bp = Blueprint("console", __name__, url_prefix="/console")

CONSOLES = ListSpec(
    search=(Institution.name, Institution.short_name),
    state_column=Institution.state,
    states=InstitutionState,
    sorts={"name": (Institution.name, Institution.id)},
    placeholder="Institution name",
)
MEMBERS = ListSpec(
    search=(User.display_name, User.email, Affiliation.title),
    sorts={
        "name": (User.display_name, Affiliation.id),
        "newest": (Affiliation.decided_at.desc(), Affiliation.id.desc()),
    },
    placeholder="Name, e-mail or position",
)
REQUESTS = ListSpec(
    search=(User.display_name, User.email, Affiliation.title),
    sorts={
        "oldest": (Affiliation.requested_at, Affiliation.id),
        "newest": (Affiliation.requested_at.desc(), Affiliation.id.desc()),
    },
    placeholder="Name, e-mail or position",
)
PROPOSALS = ListSpec(
    search=(Proposal.title,),
    sorts={
        "oldest": (Proposal.state_changed_at, Proposal.id),
        "title": (Proposal.title, Proposal.id),
    },
    placeholder="Title",
)
PROJECTS = ListSpec(
    search=(Proposal.title,),
    sorts={
        "title": (Proposal.title, Proposal.id),
        "newest": (Proposal.decided_at.desc(), Proposal.id.desc()),
    },
    placeholder="Title",
)


def _console(institution_id: int) -> Institution:
    """The institution whose console this is, for those who may open it."""
    return load(Institution, institution_id, can_use_console)


def _wants_csv() -> bool:
    return request.args.get("format") == "csv"


# --- choosing a console and its start page -------------------------------------------------------


@bp.get("/")
@login_required
def choose() -> ResponseReturnValue:
    """The institutions whose console the current user may open; straight to it when there is
    one."""
    check(can_open_consoles, current_user)
    listing = list_page(consoles_of(current_user), CONSOLES)
    if listing.page.total == 1 and not request.args:
        (only,) = listing.page.items
        return redirect(url_for(".index", institution_id=only.id))
    return render_template("console/choose.html", page=listing.page, form=listing.form)


@bp.get("/<int:institution_id>")
@login_required
def index(institution_id: int) -> ResponseReturnValue:
    inst = load(Institution, institution_id, can_use_console, selectinload(Institution.all_domains))
    return render_template(
        "console/index.html",
        inst=inst,
        counts=queries.counts(db.session, current_user, inst),
        totals=queries.totals(db.session, inst),
        mappings=queries.login_mappings(db.session, inst),
        officials=queries.officials(db.session, inst),
        federation=ProviderKind.FEDERATION,
    )


# --- logins (identity-provider mapping) ----------------------------------------------------------


@bp.route("/<int:institution_id>/logins", methods=["GET", "POST"])
@login_required
def logins(institution_id: int) -> ResponseReturnValue:
    """The logins that serve the institution; the form mapping it to another federation login."""
    inst = _console(institution_id)
    if request.method == "POST":
        check(can_map_login, current_user, inst)
    choices = services.mappable_providers(db.session, inst)
    form = NewMappingForm(providers=[(p.id, p.name) for p in choices])

    def add() -> ProviderInstitution:
        provider = db.session.get(IdentityProvider, form.provider_id.data)
        if provider is None:
            abort(404)
        return services.add_mapping(
            db.session, inst, provider, form.entity_id.data, actor=current_user
        )

    return form_page(
        form,
        add,
        template="console/logins.html",
        done=lambda m: (
            f"{m.provider.name} now serves {inst.name} for the entity id {m.entity_id}.",
            url_for(".logins", institution_id=inst.id),
        ),
        inst=inst,
        mappings=queries.login_mappings(db.session, inst),
        choices=choices,
        federation=ProviderKind.FEDERATION,
        may_map=can_map_login(current_user, inst),
    )


@bp.route("/<int:institution_id>/logins/<int:mapping_id>", methods=["GET", "POST"])
@login_required
def mapping(institution_id: int, mapping_id: int) -> ResponseReturnValue:
    """One federation login's entity id for the institution."""
    inst = _console(institution_id)
    found = load(ProviderInstitution, mapping_id, None, selectinload(ProviderInstitution.provider))
    if found.institution_id != inst.id:
        abort(404)
    check(can_map_login, current_user, inst)
    if found.provider.kind != ProviderKind.FEDERATION:
        abort(404, description="This login is the institution's own: it has no entity id.")
    form = EntityIdForm(obj=found)
    return form_page(
        form,
        lambda: services.set_entity_id(db.session, found, form.entity_id.data, actor=current_user),
        template="console/mapping.html",
        done=lambda m: (
            f"{m.provider.name} now names {inst.name} by {m.entity_id}.",
            url_for(".logins", institution_id=inst.id),
        ),
        inst=inst,
        mapping=found,
    )


# --- requests to join and members ----------------------------------------------------------------


@bp.get("/<int:institution_id>/requests")
@login_required
def requests(institution_id: int) -> ResponseReturnValue:
    """Open requests to join the institution, each with what backs the person's address, and
    the decision form for those who may decide it."""
    inst = _console(institution_id)
    listing = list_page(queries.join_requests(inst), REQUESTS)
    items = listing.page.items
    return render_template(
        "console/requests.html",
        inst=inst,
        page=listing.page,
        form=listing.form,
        checks=institution_services.address_checks(db.session, items),
        decidable=queries.decidable_ids(db.session, current_user, [a.id for a in items]),
    )


@bp.post("/<int:institution_id>/requests/<int:affiliation_id>/decide")
@login_required
def decide(institution_id: int, affiliation_id: int) -> ResponseReturnValue:
    """Approve or reject a request to join, by the affiliation workflow (its own rule decides
    who may)."""
    inst = _console(institution_id)
    aff = load(Affiliation, affiliation_id)
    if aff.institution_id != inst.id:
        abort(404)
    form = DecisionForm()
    return post_action(
        form,
        lambda: institution_services.decide_affiliation(
            db.session, aff, form.decision.data or "", actor=current_user, reason=form.note.data
        ),
        back=url_for(".requests", institution_id=inst.id),
        done=lambda a: f"{a.user.display_name}: {a.state.label.lower()}.",
    )


MEMBER_HEADER = ["name", "email", "position", "roles", "member since", "how"]


def _member_row(a: Affiliation, roles: dict[int, list[Any]]) -> list[object]:
    since = a.decided_at or a.requested_at
    return [
        a.user.display_name,
        a.user.email or "",
        a.title or "",
        "; ".join(r.label for r in roles.get(a.user_id, [])),
        since.date().isoformat(),
        a.source.label,
    ]


@bp.get("/<int:institution_id>/members")
@login_required
def members(institution_id: int) -> ResponseReturnValue:
    """The institution's members and their roles there; as CSV with ``format=csv``."""
    inst = _console(institution_id)
    stmt = queries.members(inst)
    if _wants_csv():
        rows = db.session.scalars(filtered(stmt, MEMBERS)).all()
        roles = queries.roles_at(db.session, inst, sorted({a.user_id for a in rows}))
        return csv_response(
            f"members-{inst.id}.csv", MEMBER_HEADER, rows, lambda a: _member_row(a, roles)
        )
    listing = list_page(stmt, MEMBERS)
    items = listing.page.items
    return render_template(
        "console/members.html",
        inst=inst,
        page=listing.page,
        form=listing.form,
        roles=queries.roles_at(db.session, inst, sorted({a.user_id for a in items})),
    )


# --- proposals and agreements --------------------------------------------------------------------


@bp.get("/<int:institution_id>/endorsements")
@login_required
def endorsements(institution_id: int) -> ResponseReturnValue:
    """The institution's proposals waiting for its endorsement (decided on each proposal's page)."""
    inst = _console(institution_id)
    listing = list_page(queries.awaiting_institution(current_user, inst), PROPOSALS)
    return render_template(
        "console/endorsements.html",
        inst=inst,
        page=listing.page,
        form=listing.form,
        endorsable=queries.endorsable_ids(db.session, current_user, inst),
    )


AGREEMENTS = ListSpec(
    search=(Agreement.title,),
    sorts={"oldest": (Agreement.state_changed_at, Agreement.id)},
    placeholder="Title",
)


@bp.get("/<int:institution_id>/agreements")
@login_required
def agreements(institution_id: int) -> ResponseReturnValue:
    """Agreements whose signature for the institution is still to give, with who signs next; a
    Sign link where it is the current user's turn."""
    inst = _console(institution_id)
    listing = list_page(queries.awaiting_signature(current_user, inst), AGREEMENTS)
    return render_template(
        "console/agreements.html",
        inst=inst,
        page=listing.page,
        form=listing.form,
        to_sign=queries.to_sign(db.session, current_user, inst),
    )


# --- projects ------------------------------------------------------------------------------------

PROJECT_HEADER = [
    "id",
    "title",
    "principal investigator",
    "pi email",
    "start",
    "end",
    "awarded GPU-hours",
    "used GPU-hours",
    "active dataset grants",
    "openness",
    "openness detail",
]


def _project_row(
    p: Proposal, figures: dict[int, queries.ProjectFigures], pis: dict[int, User]
) -> list[object]:
    f = figures.get(p.id, queries.ProjectFigures())
    pi = pis.get(p.id)
    end = (
        add_months(p.start_date, p.duration_months) if p.start_date and p.duration_months else None
    )
    return [
        p.id,
        p.title,
        pi.display_name if pi else "",
        (pi.email or "") if pi else "",
        p.start_date.isoformat() if p.start_date else "",
        end.isoformat() if end else "",
        f.awarded_hours,
        f"{f.used_hours:.1f}",
        f.active_grants,
        "" if f.openness.value is None else f.openness.value,
        f.openness.label,
    ]


@bp.get("/<int:institution_id>/projects")
@login_required
def projects(institution_id: int) -> ResponseReturnValue:
    """The institution's projects: GPU-hours awarded and used, active dataset access, openness,
    and the totals; as CSV with ``format=csv``."""
    inst = _console(institution_id)
    stmt = queries.projects(inst)
    if _wants_csv():
        rows = db.session.scalars(filtered(stmt, PROJECTS)).all()
        ids = [p.id for p in rows]
        figures = queries.project_figures(db.session, ids)
        pis = queries.pis(db.session, ids)
        return csv_response(
            f"projects-{inst.id}.csv",
            PROJECT_HEADER,
            rows,
            lambda p: _project_row(p, figures, pis),
        )
    listing = list_page(stmt, PROJECTS)
    items = listing.page.items
    return render_template(
        "console/projects.html",
        inst=inst,
        page=listing.page,
        form=listing.form,
        figures=queries.project_figures(db.session, [p.id for p in items]),
        pis=queries.pis(db.session, [p.id for p in items]),
        totals=queries.totals(db.session, inst),
        ends={
            p.id: add_months(p.start_date, p.duration_months)
            for p in items
            if p.start_date and p.duration_months
        },
    )
