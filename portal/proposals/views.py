"""Pages for the resources catalog, calls (public once published), proposals, their versions, the
signing officials' endorsement queue and the program officers' lists of proposals per call."""

from __future__ import annotations

import difflib
from collections.abc import Sequence
from typing import Any

from flask import Blueprint, Flask, abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from sqlalchemy import Select, func, inspect, select
from sqlalchemy.orm import contains_eager, joinedload, load_only, selectinload

from portal.auth.models import User
from portal.core.audit import events_for
from portal.core.forms import ActionForm, ConfirmForm
from portal.core.listing import ListSpec, csv_response, filtered, list_page, matches
from portal.core.permissions import check
from portal.core.roles import is_logged_in
from portal.core.web import (
    commit_or_flash,
    form_page,
    load,
    login_required,
    post_action,
    require_valid,
)
from portal.extensions import db
from portal.institutions.models import Institution
from portal.proposals import services
from portal.proposals.checklist import TEXT_FIELDS, missing_items
from portal.proposals.forms import (
    CallForm,
    ProposalFilterForm,
    ProposalForm,
    ResourceForm,
    StartForm,
    WithdrawForm,
)
from portal.proposals.models import (
    Award,
    Call,
    CallResource,
    CallState,
    Proposal,
    ProposalState,
    ProposalVersion,
    Resource,
    ResourceRequest,
    TeamMember,
    TeamRole,
)
from portal.proposals.permissions import (
    awaiting_endorsement,
    can_edit_proposal,
    can_manage_calls,
    can_propose,
    can_view_call,
    can_view_proposal,
    on_a_team,
    partner_institutions_of,
    visible_calls,
    visible_proposals,
)
from portal.proposals.workflow import CALL_WORKFLOW, PROPOSAL_WORKFLOW

bp = Blueprint("proposals", __name__)

#: Loader options for one proposal with all it shows and its checklist reads (never a statement
#: per item): its call, institution, GPU-hour requests and awards in the proposal's own statement
#: (requests and awards are one per resource the call offers at most, so few rows); the team
#: (with the people), the planned outputs and the attachments in one statement each.
PROPOSAL_DETAIL = (
    joinedload(Proposal.call),
    joinedload(Proposal.institution),
    joinedload(Proposal.requests)
    .joinedload(ResourceRequest.call_resource)
    .joinedload(CallResource.resource),
    joinedload(Proposal.awards).joinedload(Award.call_resource).joinedload(CallResource.resource),
    selectinload(Proposal.team).joinedload(TeamMember.user),
    selectinload(Proposal.outputs),
    selectinload(Proposal.attachments),
)

#: What the proposal form reads besides: the resources the call offers.
PROPOSAL_FORM = (
    *PROPOSAL_DETAIL,
    joinedload(Proposal.call).selectinload(Call.resources).joinedload(CallResource.resource),
)

#: What a draft's checklist (``missing_items``) reads besides the proposal, for a list of
#: proposals: one statement each whatever their number (``with_next_steps``).
CHECKLIST = (
    selectinload(Proposal.team),
    selectinload(Proposal.requests)
    .joinedload(ResourceRequest.call_resource)
    .joinedload(CallResource.resource),
    selectinload(Proposal.outputs),
    selectinload(Proposal.attachments),
)
_CHECKLIST_READS = frozenset({"team", "requests", "outputs", "attachments"})

CALLS = ListSpec(
    search=(Call.title, Call.description),
    state_column=Call.state,
    states=CallState,
    sorts={
        "closing": (Call.state, Call.closes_at.is_(None), Call.closes_at, Call.id.desc()),
        "newest": (Call.id.desc(),),
        "title": (Call.title, Call.id),
    },
    placeholder="Title or description",
)

RESOURCES = ListSpec(
    search=(Resource.cluster, Resource.gpu_class, Resource.description),
    sorts={"name": (Resource.cluster, Resource.gpu_class, Resource.id)},
    placeholder="Cluster or GPU class",
)

MY_PROPOSALS = ListSpec(
    search=(Proposal.title,),
    state_column=Proposal.state,
    states=ProposalState,
    sorts={
        "updated": (Proposal.updated_at.desc(), Proposal.id.desc()),
        "title": (Proposal.title, Proposal.id),
    },
    placeholder="Title",
)

CALL_PROPOSALS = ListSpec(
    search=lambda text: matches(text, Proposal.title, Proposal.abstract, Institution.name),
    state_column=Proposal.state,
    states=ProposalState,
    sorts={
        "submitted": (Proposal.submitted_at.is_(None), Proposal.submitted_at, Proposal.id),
        "title": (Proposal.title, Proposal.id),
        "institution": (Institution.name, Proposal.id),
        "updated": (Proposal.updated_at.desc(), Proposal.id.desc()),
    },
    placeholder="Title, abstract or institution",
)

QUEUE = ListSpec(
    search=(Proposal.title,),
    sorts={"waiting": (Proposal.state_changed_at, Proposal.id)},
    placeholder="Title",
)


def _visible_proposal(proposal_id: int, *options: Any) -> Proposal:
    """The proposal ``proposal_id`` if the current user may see it; 404 otherwise, so nobody
    learns which ids exist (IDOR). ``options``: loader options (``PROPOSAL_DETAIL`` by default)."""
    proposal = load(Proposal, proposal_id, None, *(options or PROPOSAL_DETAIL))
    if not can_view_proposal(current_user, proposal):
        abort(404)
    return proposal


#: Loader options for a call's page: the resources it offers (with their names), its rubric.
CALL_DETAIL = (
    selectinload(Call.resources).joinedload(CallResource.resource),
    selectinload(Call.criteria),
)


def _visible_call(call_id: int, *options: Any) -> Call:
    """The call ``call_id`` if published (or to program staff); 404 otherwise (the login page
    for anonymous visitors). ``options``: loader options (``CALL_DETAIL`` by default)."""
    call = load(Call, call_id, None, *(options or CALL_DETAIL))
    if not can_view_call(current_user, call):
        # An anonymous visitor may be staff who has not logged in yet: ask them to.
        abort(404 if is_logged_in(current_user) else 401)
    return call


# --- resources ---------------------------------------------------------------------------------


@bp.get("/resources/")
@login_required
def resources() -> ResponseReturnValue:
    check(can_manage_calls, current_user)
    listing = list_page(select(Resource), RESOURCES)
    return render_template("proposals/resources.html", page=listing.page, form=listing.form)


@bp.route("/resources/new", methods=["GET", "POST"])
@login_required
def resource_new() -> ResponseReturnValue:
    check(can_manage_calls, current_user)
    form = ResourceForm()
    return form_page(
        form,
        lambda: services.save_resource(db.session, None, actor=current_user, **form.details()),
        template="proposals/resource_form.html",
        done=lambda r: (f"{r.name} is in the catalog.", url_for(".resources")),
        resource=None,
    )


@bp.route("/resources/<int:resource_id>/edit", methods=["GET", "POST"])
@login_required
def resource_edit(resource_id: int) -> ResponseReturnValue:
    check(can_manage_calls, current_user)
    resource = load(Resource, resource_id)
    form = ResourceForm(obj=resource)
    return form_page(
        form,
        lambda: services.save_resource(db.session, resource, actor=current_user, **form.details()),
        template="proposals/resource_form.html",
        done=lambda r: ("Saved.", url_for(".resources")),
        resource=resource,
    )


# --- calls (public once published) -------------------------------------------------------------


@bp.get("/calls/")
def calls() -> ResponseReturnValue:
    """Every published call, to anyone (this is how researchers discover the program); open
    calls first. Program staff also see drafts."""
    listing = list_page(
        visible_calls(current_user).options(
            selectinload(Call.resources).selectinload(CallResource.resource)
        ),
        CALLS,
    )
    return render_template(
        "proposals/calls.html",
        page=listing.page,
        form=listing.form,
        can_manage=can_manage_calls(current_user),
    )


@bp.get("/calls/<int:call_id>")
def call_detail(call_id: int) -> ResponseReturnValue:
    call = _visible_call(call_id)
    staff = can_manage_calls(current_user)
    counts: dict[ProposalState, int] = {}
    if staff:
        counts = {
            state: n
            for state, n in db.session.execute(
                select(Proposal.state, func.count())
                .where(Proposal.call_id == call.id)
                .group_by(Proposal.state)
            ).all()
        }
    mine: Sequence[Proposal] = []
    if is_logged_in(current_user):
        mine = db.session.scalars(
            select(Proposal)
            .join(TeamMember, TeamMember.proposal_id == Proposal.id)
            .where(Proposal.call_id == call.id, TeamMember.user_id == current_user.id)
            .order_by(Proposal.id)
        ).all()
    return render_template(
        "proposals/call.html",
        call=call,
        actions=CALL_WORKFLOW.available(current_user, call),
        can_manage=staff,
        may_propose=can_propose(current_user, call),
        start_form=StartForm(),
        counts=counts,
        mine=mine,
        logged_in=is_logged_in(current_user),
    )


def _catalog() -> Sequence[Resource]:
    return db.session.scalars(
        select(Resource).where(Resource.active.is_(True)).order_by(Resource.cluster, Resource.id)
    ).all()


def _save_call(call: Call | None, form: CallForm) -> Call:
    details = form.details()
    details["offers"] = [services.Offer(*o) for o in details["offers"]]
    details["criteria"] = [services.Criterion(**c) for c in details["criteria"]]
    return services.save_call(db.session, call, actor=current_user, **details)


@bp.route("/calls/new", methods=["GET", "POST"])
@login_required
def call_new() -> ResponseReturnValue:
    check(can_manage_calls, current_user)
    form = CallForm(resources=_catalog())
    return form_page(
        form,
        lambda: _save_call(None, form),
        template="proposals/call_form.html",
        done=lambda c: ("The call is saved as a draft.", url_for(".call_detail", call_id=c.id)),
        call=None,
    )


@bp.route("/calls/<int:call_id>/edit", methods=["GET", "POST"])
@login_required
def call_edit(call_id: int) -> ResponseReturnValue:
    check(can_manage_calls, current_user)
    call = _visible_call(call_id)
    catalog = list(_catalog())
    catalog += [cr.resource for cr in call.resources if cr.resource not in catalog]
    form = CallForm(resources=catalog, call=call)
    return form_page(
        form,
        lambda: _save_call(call, form),
        template="proposals/call_form.html",
        done=lambda c: ("Saved.", url_for(".call_detail", call_id=c.id)),
        call=call,
    )


@bp.post("/calls/<int:call_id>/transition")
@login_required
def call_transition(call_id: int) -> ResponseReturnValue:
    call = _visible_call(call_id)
    form = ActionForm()
    return post_action(
        form,
        lambda: services.run_call(db.session, call, form.action.data or "", actor=current_user),
        back=url_for(".call_detail", call_id=call.id),
        done=lambda c: f"The call is now {c.state.label.lower()}.",
    )


# --- the program officer's list of a call's proposals ------------------------------------------


def _call_proposals(call: Call) -> tuple[Select[Any], ProposalFilterForm]:
    """The call's proposals the current user may see, with the extra filters applied."""
    institutions = db.session.execute(
        select(Institution.id, Institution.name)
        .where(
            Institution.id.in_(select(Proposal.institution_id).where(Proposal.call_id == call.id))
        )
        .order_by(Institution.name)
    ).all()
    form = ProposalFilterForm(
        request.args, institutions=[(i, n) for i, n in institutions], resources=call.resources
    )
    stmt = (
        visible_proposals(current_user)
        .join(Institution, Institution.id == Proposal.institution_id)
        .where(Proposal.call_id == call.id)
    )
    if form.validate():
        if form.institution.data:
            stmt = stmt.where(Proposal.institution_id == int(form.institution.data))
        if form.field.data:
            stmt = stmt.where(Proposal.field == form.field.data)
        if form.resource.data:
            stmt = stmt.where(
                Proposal.id.in_(
                    select(ResourceRequest.proposal_id).where(
                        ResourceRequest.call_resource_id == int(form.resource.data)
                    )
                )
            )
    return stmt, form


@bp.get("/calls/<int:call_id>/proposals")
@login_required
def call_proposals(call_id: int) -> ResponseReturnValue:
    check(can_manage_calls, current_user)
    call = _visible_call(call_id, selectinload(Call.resources).joinedload(CallResource.resource))
    stmt, extra = _call_proposals(call)
    options = (
        contains_eager(Proposal.institution),  # joined already, for the search and the sort
        selectinload(Proposal.team).joinedload(TeamMember.user),
        selectinload(Proposal.requests)
        .joinedload(ResourceRequest.call_resource)
        .joinedload(CallResource.resource),
    )
    if request.args.get("format") == "csv":
        rows = db.session.scalars(filtered(stmt, CALL_PROPOSALS).options(*options)).all()
        return csv_response(
            f"call-{call.id}-proposals.csv",
            [
                "id",
                "title",
                "state",
                "version",
                "submitted_at",
                "institution",
                "principal_investigator",
                "field",
                "gpu_hours",
            ],
            rows,
            lambda p: [
                p.id,
                p.title,
                p.state.value,
                p.version,
                p.submitted_at.isoformat() if p.submitted_at else "",
                p.institution.name,
                p.pi.display_name if p.pi else "",
                p.field,
                "; ".join(f"{r.call_resource.resource.name}: {r.hours}" for r in p.requests),
            ],
        )
    listing = list_page(stmt.options(*options), CALL_PROPOSALS)
    return render_template(
        "proposals/call_proposals.html",
        call=call,
        page=listing.page,
        form=listing.form,
        extra=extra,
        sort=listing.sort,
        sorts=list(CALL_PROPOSALS.sorts),
    )


# --- proposals ---------------------------------------------------------------------------------


@bp.post("/calls/<int:call_id>/propose")
@login_required
def start(call_id: int) -> ResponseReturnValue:
    """Start a draft under the call (its starter is the PI) and go on to its form."""
    call = _visible_call(call_id)
    form = StartForm()
    require_valid(form)
    ok, proposal = commit_or_flash(
        lambda: services.start_proposal(
            db.session,
            call,
            actor=current_user,
            title=(form.title.data or "").strip() or f"Proposal to {call.title}",
        )
    )
    if not ok or proposal is None:
        return redirect(url_for(".call_detail", call_id=call.id)), 303
    flash("Your draft is started. Fill it in at your own pace: “Save draft” keeps it.", "success")
    return redirect(url_for(".edit", proposal_id=proposal.id))


def next_step(proposal: Proposal, user: Any, missing: list[str]) -> str:
    """What ``user`` (on the team) should do next with ``proposal``, in one sentence."""
    state = proposal.state
    if state in (ProposalState.DRAFT, ProposalState.RETURNED, ProposalState.REVISE):
        if not proposal.call.accepts_submissions():
            return "The call is closed; this draft can no longer be submitted."
        if missing:
            return (
                f"Add {missing[0]}"
                + (f" and {len(missing) - 1} more" if len(missing) > 1 else "")
                + "."
            )
        pi = next((m.user_id for m in proposal.team if m.role == TeamRole.PI), None)
        if pi is not None and pi == getattr(user, "id", None):
            return "Complete: submit it."
        return "Complete: the principal investigator can submit it."
    if state == ProposalState.AWAITING_ENDORSEMENT:
        return "Nothing: it waits for your institution's signing official."
    if state == ProposalState.SUBMITTED:
        return "Nothing: it waits for review."
    if state == ProposalState.IN_REVIEW:
        return "Nothing: reviewers are at work; the decision follows."
    if state == ProposalState.ACTIVE:
        return "Approved: an active project with its GPU-hours."
    if state == ProposalState.DECLINED:
        return "Nothing: it was declined (the reason is on its page)."
    return "Nothing: it is withdrawn."


def with_next_steps(proposals: Sequence[Proposal], user: Any) -> list[tuple[Proposal, str]]:
    """Each of ``proposals`` (loaded with their calls) with what ``user`` should do next. Only a
    draft has a checklist: what it reads, unless loaded with the list (``CHECKLIST``), is loaded
    for the drafts among ``proposals`` together, in a fixed number of statements whatever their
    number (none without a draft)."""
    drafts = [p.id for p in proposals if p.is_editable and _CHECKLIST_READS & inspect(p).unloaded]
    if drafts:
        # Fills in the drafts' collections (the proposals themselves are in the session already).
        db.session.scalars(
            select(Proposal)
            .where(Proposal.id.in_(drafts))
            .options(load_only(Proposal.id), *CHECKLIST)
        ).all()
    return [(p, next_step(p, user, missing_items(p) if p.is_editable else [])) for p in proposals]


@bp.get("/proposals/")
@login_required
def index() -> ResponseReturnValue:
    """The proposals the current user is on the team of, each with what to do next (what the
    drafts' checklists read is loaded for the whole page: its statements are the same whatever
    the page shows)."""
    mine = select(TeamMember.proposal_id).where(TeamMember.user_id == current_user.id)
    listing = list_page(
        visible_proposals(current_user)
        .where(Proposal.id.in_(mine))
        .options(joinedload(Proposal.call), *CHECKLIST),
        MY_PROPOSALS,
    )
    return render_template(
        "proposals/index.html",
        page=listing.page,
        form=listing.form,
        rows=with_next_steps(listing.page.items, current_user),
        can_manage=can_manage_calls(current_user),
    )


#: The steps the proposal's page offers: submitting, withdrawing, the endorsement.
DETAIL_ACTIONS = frozenset({"submit", "submit_for_endorsement", "withdraw", "endorse", "return"})


@bp.get("/proposals/<int:proposal_id>")
@login_required
def detail(proposal_id: int) -> ResponseReturnValue:
    proposal = _visible_proposal(proposal_id, *PROPOSAL_DETAIL, selectinload(Proposal.invitations))
    # A proposal never submitted (version 0) has no versions to ask for.
    versions = (
        db.session.scalars(
            select(ProposalVersion)
            .where(ProposalVersion.proposal_id == proposal.id)
            .options(load_only(ProposalVersion.number, ProposalVersion.submitted_at))
            .order_by(ProposalVersion.number.desc())
        ).all()
        if proposal.version
        else []
    )
    # Only the steps this page offers (the review's steps are on the decision page).
    actions = [
        (a, tr)
        for a, tr in PROPOSAL_WORKFLOW.transitions.items()
        if a in DETAIL_ACTIONS and PROPOSAL_WORKFLOW.may(current_user, proposal, a)
    ]
    on_team = any(m.user_id == current_user.id for m in proposal.team)
    missing = missing_items(proposal) if proposal.is_editable and on_team else []
    return render_template(
        "proposals/detail.html",
        proposal=proposal,
        versions=versions,
        missing=missing,
        on_team=on_team,
        next_step=next_step(proposal, current_user, missing) if on_team else None,
        can_submit=any(a.startswith("submit") for a, _ in actions),
        can_withdraw=any(a == "withdraw" for a, _ in actions),
        decisions=[(a, t) for a, t in actions if a in ("endorse", "return")],
        can_edit=can_edit_proposal(current_user, proposal),
        withdraw_form=WithdrawForm(),
        # Program staff see the proposal's audit trail (waived conflicts of interest included).
        history=db.session.scalars(events_for(proposal).limit(30)).all()
        if can_manage_calls(current_user)
        else [],
    )


def _not_editable(proposal: Proposal) -> ResponseReturnValue:
    flash(
        f"This proposal is {proposal.state.label.lower()}: it no longer changes. "
        "Withdraw it, or wait until it is returned to you.",
        "warning",
    )
    return redirect(url_for(".detail", proposal_id=proposal.id)), 303


@bp.route("/proposals/<int:proposal_id>/edit", methods=["GET", "POST"])
@login_required
def edit(proposal_id: int) -> ResponseReturnValue:
    proposal = _visible_proposal(proposal_id, *PROPOSAL_FORM)
    if not proposal.is_editable and any(m.user_id == current_user.id for m in proposal.team):
        return _not_editable(proposal)
    check(can_edit_proposal, current_user, proposal)
    form = ProposalForm(proposal=proposal)

    def save() -> Proposal:
        details = form.details()
        details["requests"] = [services.Request(*r) for r in details["requests"]]
        details["outputs"] = [services.Output(*o) for o in details["outputs"]]
        return services.save_draft(db.session, proposal, actor=current_user, **details)

    return form_page(
        form,
        save,
        template="proposals/form.html",
        done=lambda p: ("Draft saved.", url_for(".detail", proposal_id=p.id)),
        proposal=proposal,
        missing=missing_items(proposal),
    )


@bp.post("/proposals/<int:proposal_id>/submit")
@login_required
def submit(proposal_id: int) -> ResponseReturnValue:
    proposal = _visible_proposal(proposal_id)
    return post_action(
        ConfirmForm(),
        lambda: services.submit_proposal(db.session, proposal, actor=current_user),
        back=url_for(".detail", proposal_id=proposal.id),
        done=lambda p: (
            f"Submitted (version {p.version}). "
            + (
                "It now waits for your institution's endorsement."
                if p.state == ProposalState.AWAITING_ENDORSEMENT
                else "It now waits for review."
            )
        ),
    )


@bp.post("/proposals/<int:proposal_id>/withdraw")
@login_required
def withdraw(proposal_id: int) -> ResponseReturnValue:
    proposal = _visible_proposal(proposal_id)
    form = WithdrawForm()
    return post_action(
        form,
        lambda: services.withdraw_proposal(
            db.session, proposal, actor=current_user, reason=form.reason.data
        ),
        back=url_for(".detail", proposal_id=proposal.id),
        done="The proposal is withdrawn.",
    )


@bp.post("/proposals/<int:proposal_id>/endorsement")
@login_required
def endorse(proposal_id: int) -> ResponseReturnValue:
    proposal = _visible_proposal(proposal_id)
    form = ActionForm()
    return post_action(
        form,
        lambda: services.decide_endorsement(
            db.session,
            proposal,
            form.action.data or "",
            actor=current_user,
            reason=form.reason.data,
        ),
        back=url_for(".detail", proposal_id=proposal.id),
        done=lambda p: (
            "Endorsed: the proposal goes on to review."
            if p.state == ProposalState.SUBMITTED
            else "Returned to the team with your reason."
        ),
    )


# --- versions ----------------------------------------------------------------------------------


def text_diff(old: str, new: str) -> list[tuple[str, str]]:
    """The lines of ``old`` and ``new`` as (op, line): op is ``" "`` (same), ``"-"`` (removed) or
    ``"+"`` (added). Plain text: the template escapes it."""
    out: list[tuple[str, str]] = []
    for line in difflib.ndiff(old.splitlines(), new.splitlines()):
        op, text = line[:1], line[2:]
        if op in (" ", "-", "+"):
            out.append((op, text))
    return out


def _text(snapshot: dict[str, Any], name: str) -> str:
    value = snapshot.get(name)
    return "" if value is None else str(value)


@bp.get("/proposals/<int:proposal_id>/versions/<int:number>")
@login_required
def version(proposal_id: int, number: int) -> ResponseReturnValue:
    """A submitted version as it was frozen, and what changed since the version before it."""
    proposal = _visible_proposal(proposal_id)
    versions = {v.number: v for v in proposal.versions}
    shown = versions.get(number)
    if shown is None:
        abort(404)
    against = request.args.get("against", number - 1, type=int)
    base = versions.get(against) if against != number else None
    diffs = []
    if base is not None:
        for name in TEXT_FIELDS:
            old, new = _text(base.snapshot, name), _text(shown.snapshot, name)
            if old != new:
                diffs.append((name, text_diff(old, new)))
    return render_template(
        "proposals/version.html",
        proposal=proposal,
        version=shown,
        base=base,
        diffs=diffs,
        numbers=sorted(versions),
        text_fields=TEXT_FIELDS,
    )


# --- endorsement queue -------------------------------------------------------------------------


@bp.get("/endorsements/")
@login_required
def endorsements() -> ResponseReturnValue:
    """Proposals waiting for the current user's endorsement (empty for anyone who endorses
    nothing)."""
    listing = list_page(
        awaiting_endorsement(current_user).options(
            selectinload(Proposal.call),
            selectinload(Proposal.institution),
            selectinload(Proposal.team).selectinload(TeamMember.user),
        ),
        QUEUE,
    )
    return render_template("proposals/endorsements.html", page=listing.page, form=listing.form)


# --- navigation and dashboard ------------------------------------------------------------------


def _is_official(user: Any) -> bool:
    from portal.auth.models import Role

    return isinstance(user, User) and bool(user.institution_ids_for(Role.SIGNING_OFFICIAL))


def register_ui(app: Flask) -> None:
    """Navigation entries and dashboard cards."""
    from portal.core import navigation
    from portal.core.navigation import NavItem, Panel, Stat

    navigation.register(
        NavItem("proposals.calls", "Calls", lambda u: True, order=30, group="Proposals")
    )
    navigation.register(
        NavItem(
            "proposals.index",
            "Proposals",
            # Members of partners may propose (their affiliations are loaded with them: no query).
            lambda u: can_manage_calls(u) or bool(partner_institutions_of(u)) or on_a_team(u),
            order=40,
            group="Proposals",
        )
    )
    navigation.register(
        NavItem("proposals.endorsements", "Endorsements", _is_official, order=45, group="Proposals")
    )
    navigation.register(
        NavItem("proposals.resources", "Resources", can_manage_calls, order=50, group="Proposals")
    )

    def my_proposals(user: Any) -> dict[str, Any] | None:
        if not on_a_team(user):
            # No proposal yet: the card invites those who may propose to start one.
            return {"rows": []} if partner_institutions_of(user) else None
        rows = db.session.scalars(
            select(Proposal)
            .join(TeamMember, TeamMember.proposal_id == Proposal.id)
            .where(TeamMember.user_id == user.id)
            .options(joinedload(Proposal.call))
            .order_by(Proposal.updated_at.desc(), Proposal.id.desc())
            .limit(5)
        ).all()
        return {"rows": with_next_steps(rows, user)}

    def open_calls(user: Any) -> dict[str, Any] | None:
        if not partner_institutions_of(user):
            return None
        calls = db.session.scalars(
            select(Call)
            .where(Call.state == CallState.OPEN)
            .order_by(Call.closes_at.is_(None), Call.closes_at, Call.id)
            .limit(5)
        ).all()
        return {"calls": calls}

    def to_endorse(user: Any) -> dict[str, Any] | None:
        if not _is_official(user):
            return None
        rows = db.session.scalars(
            awaiting_endorsement(user)
            .options(joinedload(Proposal.institution), joinedload(Proposal.call))
            .order_by(Proposal.state_changed_at, Proposal.id)
            .limit(10)
        ).all()
        return {"proposals": rows}

    def calls_overview(user: Any) -> dict[str, Any] | None:
        if not can_manage_calls(user):
            return None
        waiting = (
            select(func.count())
            .where(
                Proposal.call_id == Call.id,
                Proposal.state.in_([ProposalState.SUBMITTED, ProposalState.AWAITING_ENDORSEMENT]),
            )
            .scalar_subquery()
        )
        rows = db.session.execute(
            select(Call, waiting)
            .where(Call.state != CallState.ARCHIVED)
            .order_by(Call.id.desc())
            .limit(10)
        ).all()
        return {"calls": [c for c, _ in rows], "counts": {c.id: n for c, n in rows if n}}

    navigation.register_panel(
        Panel("my_proposals", "proposals/panels/my_proposals.html", my_proposals, 40)
    )
    navigation.register_panel(
        Panel("open_calls", "proposals/panels/open_calls.html", open_calls, 45)
    )
    navigation.register_panel(
        Panel("to_endorse", "proposals/panels/endorsements.html", to_endorse, 25)
    )
    navigation.register_panel(
        Panel("calls_overview", "proposals/panels/calls.html", calls_overview, 35)
    )
    navigation.register_stat(
        Stat(
            "Open calls",
            lambda: db.session.scalar(
                select(func.count()).select_from(Call).where(Call.state == CallState.OPEN)
            ),
            order=20,
        )
    )
