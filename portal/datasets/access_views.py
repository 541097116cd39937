"""Asking for access and holding it: the request form of a controlled dataset (with its terms, the
data-use agreement to be signed and its stewards) and the acceptance of a registered dataset's
terms; the requests list ("waiting on me", mine, all the viewer may see; CSV for stewards and
program staff); one request with its history, its data-use agreement once approved and the
decisions the viewer may take; the access list ("my access", "access to my datasets", all; CSV for
stewards, program staff and signing officials); one grant with its agreement, where the data is,
its history, revocation and "ask for more time". The routes are on the datasets blueprint."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

from flask import abort, flash, redirect, render_template, request, url_for
from flask.typing import ResponseReturnValue
from flask_login import current_user
from flask_wtf import FlaskForm
from sqlalchemy import ColumnElement, Select, and_, exists, func, or_, select
from sqlalchemy.orm import joinedload, selectinload

from portal.agreements.models import Agreement, AgreementKind, Signature, SubjectType
from portal.agreements.services import lab_name
from portal.agreements.text import fill, sample_fields
from portal.auth.models import User
from portal.auth.permissions import as_user
from portal.core.audit import AuditEvent, events_for
from portal.core.errors import DomainError
from portal.core.forms import ConfirmForm
from portal.core.listing import ListSpec, contains, csv_response, filtered, list_page
from portal.core.models import utcnow
from portal.core.permissions import check
from portal.core.web import commit_or_flash, form_page, load, login_required
from portal.datasets import permissions, services
from portal.datasets.access_forms import (
    AcceptForm,
    ApproveForm,
    GrantFilterForm,
    ReasonForm,
    RenewalForm,
    RequestFilterForm,
    RequestForm,
    ResubmitForm,
)
from portal.datasets.models import (
    LIVE_GRANTS,
    AccessRequest,
    AccessTier,
    Dataset,
    DatasetSteward,
    Grant,
    GrantState,
    RequestState,
)
from portal.datasets.views import bp
from portal.datasets.workflow import GRANT_WORKFLOW, REQUEST_WORKFLOW
from portal.extensions import db
from portal.proposals.models import Proposal, ProposalState, TeamMember
from portal.proposals.permissions import partner_institutions_of

#: "Ending soon" on the access list: within this many days.
EXPIRING_DAYS = 30
#: Audit events shown on a request's or a grant's page.
HISTORY_LIMIT = 30

__all__ = ["bp"]

# --- loading -------------------------------------------------------------------------------------

#: Loader options for one request with everything its page shows (no query per fact).
REQUEST_DETAIL = (
    joinedload(AccessRequest.dataset),
    joinedload(AccessRequest.user),
    joinedload(AccessRequest.institution),
    joinedload(AccessRequest.proposal),
    joinedload(AccessRequest.decided_by),
    joinedload(AccessRequest.grant),
)

#: Loader options for one grant with everything its page shows.
GRANT_DETAIL = (
    joinedload(Grant.dataset),
    joinedload(Grant.user),
    joinedload(Grant.institution),
    joinedload(Grant.proposal),
    joinedload(Grant.ended_by),
    selectinload(Grant.requests),
)


def _dataset(slug: str) -> Dataset:
    """The dataset called ``slug`` (404), which the current user may see (an audited 403)."""
    dataset = db.session.scalar(
        select(Dataset)
        .where(Dataset.slug == slug)
        .options(
            joinedload(Dataset.dua_template),
            selectinload(Dataset.stewards).joinedload(DatasetSteward.user),
        )
    )
    if dataset is None:
        abort(404)
    check(permissions.can_view_dataset, current_user, dataset)
    return dataset


def _request(request_id: int) -> AccessRequest:
    return load(AccessRequest, request_id, permissions.can_view_request, *REQUEST_DETAIL)


def _grant(grant_id: int) -> Grant:
    return load(Grant, grant_id, permissions.can_view_grant, *GRANT_DETAIL)


def _duas(grant_ids: Sequence[int] | Select[Any]) -> dict[int, Agreement]:
    """The newest data-use agreement of each grant (a re-consent issues a newer one for the same
    access), in one query."""
    newest = (
        select(func.max(Agreement.id))
        .where(
            Agreement.kind == AgreementKind.DATA_USE,
            Agreement.subject_type == SubjectType.DATASET_ACCESS,
            Agreement.subject_id.in_(grant_ids),
        )
        .group_by(Agreement.subject_id)
    )
    return {
        a.subject_id: a
        for a in db.session.scalars(select(Agreement).where(Agreement.id.in_(newest)))
    }


def _agreements_of(grant: Grant) -> list[Agreement]:
    """Every data-use agreement issued for ``grant``, newest first, with its signatures."""
    return list(
        db.session.scalars(
            select(Agreement)
            .where(
                Agreement.kind == AgreementKind.DATA_USE,
                Agreement.subject_type == SubjectType.DATASET_ACCESS,
                Agreement.subject_id == grant.id,
            )
            .options(selectinload(Agreement.signatures).joinedload(Signature.user))
            .order_by(Agreement.id.desc())
        )
    )


def _history(obj: Any) -> tuple[list[AuditEvent], dict[int, str]]:
    """The object's audit trail (newest first) and the names of the people in it."""
    events = list(db.session.scalars(events_for(obj).limit(HISTORY_LIMIT)))
    ids = {e.actor_id for e in events if e.actor_id is not None}
    names: dict[int, str] = {}
    if ids:
        rows = db.session.execute(select(User.id, User.display_name).where(User.id.in_(ids)))
        names = {uid: name for uid, name in rows}
    return events, names


# --- asking --------------------------------------------------------------------------------------


def _active_projects(user: Any) -> list[Proposal]:
    """The active projects ``user`` is on (what a request may be for)."""
    u = as_user(user)
    if u is None:
        return []
    return list(
        db.session.scalars(
            select(Proposal)
            .join(TeamMember, TeamMember.proposal_id == Proposal.id)
            .where(TeamMember.user_id == u.id, Proposal.state == ProposalState.ACTIVE)
            .order_by(Proposal.title, Proposal.id)
        )
    )


def _dua_preview(dataset: Dataset) -> str | None:
    """The text of the data-use agreement a request for ``dataset`` leads to, as its template's
    current version reads, filled in with what is known now (the rest as stand-ins)."""
    template = dataset.dua_template
    version = template.current if template is not None else None
    if version is None:
        return None
    partners = partner_institutions_of(current_user)
    latest = services.longest_end(dataset)
    fields = {
        **sample_fields(AgreementKind.DATA_USE),
        "lab": lab_name(),
        "today": f"{utcnow():%d %B %Y}",
        "dataset": dataset.name,
        "researcher": current_user.display_name,
        "purpose": "[the intended use you write below]",
        "expires_on": f"[the end date the steward sets: at most {latest:%d %B %Y}]",
    }
    if len(partners) == 1:
        fields["institution"] = partners[0].name
    try:
        return fill(version.body, fields)
    except DomainError:
        return version.body


def _request_page_context(dataset: Dataset) -> dict[str, Any]:
    return {
        "dataset": dataset,
        "stewards": [s.user for s in dataset.stewards],
        "dua": _dua_preview(dataset),
        "dua_template": dataset.dua_template,
        "longest": services.longest_end(dataset),
    }


@bp.route("/<slug>/request", methods=["GET", "POST"])
@login_required
def request_form(slug: str) -> ResponseReturnValue:
    """Ask for access to a controlled dataset: the intended use and, optionally, one of the
    researcher's active projects; beside it the dataset's terms, the data-use agreement they will
    sign and its stewards. Someone who holds access or has asked already is sent there instead."""
    dataset = _dataset(slug)
    held = services.live_grant(db.session, dataset.id, current_user.id)
    pending = services.open_request(db.session, dataset.id, current_user.id)
    if held is not None or pending is not None:
        return render_template(
            "datasets/access/request.html",
            form=None,
            held=held,
            pending=pending,
            **_request_page_context(dataset),
        ), (409 if request.method == "POST" else 200)
    check(permissions.can_request_access, current_user, dataset)
    form = RequestForm(projects=_active_projects(current_user))
    return form_page(
        form,
        lambda: services.request_access(
            db.session,
            dataset,
            actor=current_user,
            intended_use=form.intended_use.data or "",
            proposal=form.project(),
        ),
        template="datasets/access/request.html",
        done=lambda r: (
            f"Your request for “{dataset.name}” was sent to its stewards; you will hear of their "
            "decision by e-mail.",
            url_for(".request_detail", request_id=r.id),
        ),
        held=None,
        pending=None,
        **_request_page_context(dataset),
    )


@bp.post("/<slug>/accept")
@login_required
def accept_terms(slug: str) -> ResponseReturnValue:
    """Accept a registered dataset's terms (the box must be ticked): access starts at once, for
    the dataset's longest period."""
    dataset = _dataset(slug)
    check(permissions.can_accept_terms, current_user, dataset)
    form = AcceptForm()
    return form_page(
        form,
        lambda: services.accept_terms(
            db.session, dataset, actor=current_user, accepted=bool(form.accepted.data)
        ),
        template="datasets/access/accept.html",
        done=lambda g: (
            f"You accepted the terms of “{dataset.name}”: you have access until "
            f"{g.ends_on:%d %B %Y}.",
            url_for(".grant_detail", grant_id=g.id),
        ),
        dataset=dataset,
    )


# --- the requests list ---------------------------------------------------------------------------


def _dataset_or_person(dataset_id: Any, user_id: Any, text: str) -> ColumnElement[bool]:
    """The search of both lists: the dataset's name or the person's contains ``text``, without
    joining either table to the list (so that counting the list reads only its own). The few
    datasets matching are listed once; the person is looked up row by row, so that the list is
    still found from who may see it (a steward's few rows), never from the people matching."""
    return or_(
        dataset_id.in_(select(Dataset.id).where(contains(Dataset.name, text))),
        exists().where(User.id == user_id, contains(User.display_name, text)),
    )


REQUESTS = ListSpec(
    search=lambda text: _dataset_or_person(AccessRequest.dataset_id, AccessRequest.user_id, text),
    state_column=AccessRequest.state,
    states=RequestState,
    sorts={
        "newest": (AccessRequest.created_at.desc(), AccessRequest.id.desc()),
        "oldest": (AccessRequest.created_at, AccessRequest.id),
    },
    placeholder="Dataset or person",
)
#: A queue: the longest waiting first.
WAITING = replace(REQUESTS, sorts=dict(reversed(list(REQUESTS.sorts.items()))))

#: The requests list's tabs: key → label.
REQUEST_TABS = {"all": "All I can see", "waiting": "Waiting on me", "mine": "Mine"}


def _waiting_on(user: Any) -> Any:
    """Requests waiting on ``user``: those they may decide that wait for a steward, and their own
    sent back for changes."""
    u = as_user(user)
    decidable = (
        permissions.decidable_requests(user)
        .where(AccessRequest.state == RequestState.SUBMITTED)
        .with_only_columns(AccessRequest.id)
    )
    return or_(
        AccessRequest.id.in_(decidable),
        and_(
            AccessRequest.user_id == (u.id if u is not None else -1),
            AccessRequest.state == RequestState.CHANGES_REQUESTED,
        ),
    )


def _requests(user: Any, tab: str) -> Select[Any]:
    """The requests of ``tab`` that ``user`` may see (``REQUEST_ROW`` loads what a row shows)."""
    stmt = permissions.visible_requests(user)
    if tab == "waiting":
        stmt = stmt.where(_waiting_on(user))
    elif tab == "mine":
        u = as_user(user)
        stmt = stmt.where(AccessRequest.user_id == (u.id if u is not None else -1))
    return stmt


#: Loader options for a page of the requests list: its requesters in one query (joined into the
#: list's query, they would be read and sorted for every request the filter matches, not only
#: for the rows the page shows); its institutions (a small table) and its projects' titles
#: joined. Each row's dataset is among the dataset filter's choices, loaded before the page and
#: held by the view: the session has it, and no query asks for it again.
REQUEST_ROW = (
    selectinload(AccessRequest.user),
    joinedload(AccessRequest.institution),
    joinedload(AccessRequest.proposal).load_only(Proposal.title),
)
#: Loader options for the rows of the CSV (every row: joined, one query whatever their number).
REQUEST_CSV_ROW = (
    joinedload(AccessRequest.dataset),
    joinedload(AccessRequest.user),
    joinedload(AccessRequest.institution),
    joinedload(AccessRequest.proposal),
)


def _datasets_in(ids: Select[Any]) -> list[Dataset]:
    return list(
        db.session.scalars(
            select(Dataset).where(Dataset.id.in_(ids)).order_by(Dataset.name, Dataset.id)
        )
    )


@bp.get("/requests")
@login_required
def requests() -> ResponseReturnValue:
    """The access requests the current user may see — waiting on them, their own, or all — with
    search, state, dataset and kind filters; CSV for stewards and program staff."""
    tab = request.args.get("show", "all")
    if tab not in REQUEST_TABS:
        tab = "all"
    spec = WAITING if tab == "waiting" else REQUESTS
    # The filter's choices are the datasets of every request listed: held here until the page is
    # drawn, the session gives each row its dataset without a query (``REQUEST_ROW``).
    datasets = _datasets_in(
        permissions.visible_requests(current_user).with_only_columns(AccessRequest.dataset_id)
    )
    filters = RequestFilterForm(request.args, datasets=datasets)
    stmt = _requests(current_user, tab)
    dataset_id = filters.chosen_dataset()
    if dataset_id is not None:
        stmt = stmt.where(AccessRequest.dataset_id == dataset_id)
    renewal = filters.chosen_kind()
    if renewal is not None:
        stmt = stmt.where(AccessRequest.is_renewal.is_(renewal))
    if request.args.get("format") == "csv":
        check(permissions.can_export_requests, current_user)
        return csv_response(
            "access-requests.csv",
            [
                "id",
                "dataset",
                "kind",
                "requester",
                "institution",
                "project",
                "state",
                "asked_at",
                "decided_at",
                "ends_on",
                "intended_use",
            ],
            db.session.scalars(filtered(stmt, spec).options(*REQUEST_CSV_ROW)).all(),
            lambda r: [
                r.id,
                r.dataset.name,
                "renewal" if r.is_renewal else "new",
                r.user.display_name,
                r.institution.name,
                r.proposal.title if r.proposal else "",
                r.state.value,
                r.created_at.isoformat(),
                r.decided_at.isoformat() if r.decided_at else "",
                r.ends_on.isoformat() if r.ends_on else "",
                r.intended_use,
            ],
        )
    listing = list_page(stmt.options(*REQUEST_ROW), spec)
    waiting = db.session.scalar(
        select(func.count()).select_from(
            permissions.visible_requests(current_user).where(_waiting_on(current_user)).subquery()
        )
    )
    return render_template(
        "datasets/access/requests.html",
        page=listing.page,
        form=listing.form,
        filters=filters,
        tab=tab,
        tabs=REQUEST_TABS,
        waiting=waiting or 0,
        sort=listing.sort,
        sorts=list(spec.sorts),
        now=utcnow(),
        export=permissions.can_export_requests(current_user),
    )


# --- one request ---------------------------------------------------------------------------------


def _action_form(req: AccessRequest, action: str, *, posted: bool) -> FlaskForm:
    """The form of ``action`` on ``req`` (each with its own prefix: several are on one page);
    ``posted``: filled in from this request's POST, else empty (or with its defaults)."""
    data: dict[str, Any] = {} if posted else {"formdata": None}
    if action == "approve":
        today = utcnow().date()
        latest = services.longest_end(req.dataset, today)
        return ApproveForm(
            prefix=action,
            dataset=req.dataset,
            latest=latest,
            today=today,
            **(data if posted else {**data, "ends_on": latest}),
        )
    if action == "request_changes":
        return ReasonForm(
            prefix=action,
            label="What should change",
            help="Sent to the requester, who may change the request and send it again.",
            **data,
        )
    if action == "decline":
        return ReasonForm(
            prefix=action,
            label="Why it is declined",
            help="Sent to the requester. Declining ends the request.",
            **data,
        )
    if action == "resubmit":
        return ResubmitForm(
            prefix=action, **(data if posted else {**data, "intended_use": req.intended_use})
        )
    return ConfirmForm(prefix=action, **data)


def _request_changes(req: AccessRequest, action: str, form: Any) -> Callable[[], object]:
    """The service call ``action`` on ``req`` makes with ``form``'s fields."""
    session, actor = db.session, current_user
    calls: dict[str, Callable[[], object]] = {
        "approve": lambda: services.approve(
            session, req, actor=actor, ends_on=form.ends_on.data, note=form.note.data
        ),
        "request_changes": lambda: services.request_changes(
            session, req, actor=actor, reason=form.reason.data or ""
        ),
        "decline": lambda: services.decline(
            session, req, actor=actor, reason=form.reason.data or ""
        ),
        "resubmit": lambda: services.resubmit(
            session, req, actor=actor, intended_use=form.intended_use.data or ""
        ),
        "withdraw": lambda: services.withdraw(session, req, actor=actor),
    }
    return calls[action]


def _done(req: AccessRequest, action: str) -> str:
    who = req.user.display_name
    if action == "approve":
        assert req.ends_on is not None
        if req.is_renewal:
            return f"Approved: {who}'s access now runs until {req.ends_on:%d %B %Y}."
        return (
            f"Approved until {req.ends_on:%d %B %Y}. The data-use agreement went to {who} to "
            "sign; access starts once it is signed."
        )
    return {
        "request_changes": f"Sent back to {who} with the changes you asked for.",
        "decline": f"Request declined; {who} is told why.",
        "resubmit": "Your request was sent to the stewards again.",
        "withdraw": "Request withdrawn.",
    }[action]


def _request_page(req: AccessRequest, posted: dict[str, FlaskForm] | None = None) -> str:
    """The request's page, with the forms of the actions the viewer may take (``posted``: a form
    sent back with its errors)."""
    actions = dict(REQUEST_WORKFLOW.available(current_user, req))
    forms = {name: _action_form(req, name, posted=False) for name in actions}
    forms.update(posted or {})
    grant = req.grant
    agreement = next(iter(_agreements_of(grant)), None) if grant is not None else None
    events, names = _history(req)
    return render_template(
        "datasets/access/request_detail.html",
        req=req,
        dataset=req.dataset,
        actions=actions,
        forms=forms,
        grant=grant,
        agreement=agreement,
        events=events,
        names=names,
        now=utcnow(),
        # Who decides it now (a steward never decides their own request).
        waiting_stewards=[s.user for s in req.dataset.stewards if s.user_id != req.user_id]
        if req.state == RequestState.SUBMITTED
        else [],
    )


@bp.get("/requests/<int:request_id>")
@login_required
def request_detail(request_id: int) -> ResponseReturnValue:
    """A request: what it is for (intended use, project, institution), its state and decision,
    the data-use agreement once approved, its history, and the forms of the steps the viewer may
    take (stewards: approve until a date, ask for changes, decline; the requester: send it again,
    withdraw)."""
    return _request_page(_request(request_id))


@bp.post("/requests/<int:request_id>/<action>")
@login_required
def request_action(request_id: int, action: str) -> ResponseReturnValue:
    """One step on a request (approve, request_changes, decline, resubmit, withdraw), by whom the
    workflow lets take it; a refused field or rule shows the page again with the reason, and
    nothing changes."""
    if action not in REQUEST_WORKFLOW.transitions:
        abort(404)
    req = _request(request_id)
    check(REQUEST_WORKFLOW.permissions[action], current_user, req)
    form = _action_form(req, action, posted=True)
    if form.validate_on_submit():
        ok, _ = commit_or_flash(_request_changes(req, action, form))
        if ok:
            flash(_done(req, action), "success")
            return redirect(url_for(".request_detail", request_id=req.id))
    return _request_page(req, {action: form}), 422


# --- the access list -----------------------------------------------------------------------------

GRANTS = ListSpec(
    search=lambda text: _dataset_or_person(Grant.dataset_id, Grant.user_id, text),
    state_column=Grant.state,
    states=GrantState,
    sorts={
        "ending": (Grant.ends_on, Grant.id),
        "newest": (Grant.id.desc(),),
        "dataset": (
            select(Dataset.name).where(Dataset.id == Grant.dataset_id).scalar_subquery(),
            Grant.id,
        ),
    },
    placeholder="Dataset or person",
)

#: The access list's tabs: key → label ("stewarded" only for stewards).
GRANT_TABS = {"all": "All I can see", "mine": "My access", "stewarded": "Access to my datasets"}


#: Loader options for a page of the access list, as for the requests list (``REQUEST_ROW``): its
#: holders in one query, its institutions joined, its datasets already in the session (the
#: dataset filter's choices). The page shows no project.
GRANT_ROW = (
    selectinload(Grant.user),
    joinedload(Grant.institution),
)
#: Loader options for the rows of the CSV.
GRANT_CSV_ROW = (
    joinedload(Grant.dataset),
    joinedload(Grant.user),
    joinedload(Grant.institution),
    joinedload(Grant.proposal),
)


def _grants(user: Any, tab: str) -> Select[Any]:
    """The grants of ``tab`` that ``user`` may see (``GRANT_ROW`` loads what a row shows)."""
    stmt = permissions.visible_grants(user)
    u = as_user(user)
    if tab == "mine":
        stmt = stmt.where(Grant.user_id == (u.id if u is not None else -1))
    elif tab == "stewarded":
        stmt = stmt.where(Grant.dataset_id.in_(permissions.stewarded_ids(user)))
    return stmt


@bp.get("/access")
@login_required
def grants() -> ResponseReturnValue:
    """The access the current user may see — their own, to the datasets they steward, or all
    (program staff; signing officials: their institution's people) — with search, state, dataset
    and "ending within 30 days" filters; CSV for stewards, program staff and signing officials."""
    stewards = permissions.stewards_any(current_user)
    tabs = {k: v for k, v in GRANT_TABS.items() if k != "stewarded" or stewards}
    tab = request.args.get("show", "all")
    if tab not in tabs:
        tab = "all"
    # As on the requests list: the filter's choices are the rows' datasets, held for the page.
    datasets = _datasets_in(
        permissions.visible_grants(current_user).with_only_columns(Grant.dataset_id)
    )
    filters = GrantFilterForm(request.args, datasets=datasets)
    today = utcnow().date()
    stmt = _grants(current_user, tab)
    dataset_id = filters.chosen_dataset()
    if dataset_id is not None:
        stmt = stmt.where(Grant.dataset_id == dataset_id)
    if filters.expiring.data:
        stmt = stmt.where(
            Grant.state == GrantState.ACTIVE,
            Grant.ends_on >= today,
            Grant.ends_on <= today + dt.timedelta(days=EXPIRING_DAYS),
        )
    if request.args.get("format") == "csv":
        check(permissions.can_export_grants, current_user)
        rows = filtered(stmt, GRANTS)
        duas = _duas(rows.with_only_columns(Grant.id).order_by(None))
        rows = rows.options(*GRANT_CSV_ROW)
        return csv_response(
            "dataset-access.csv",
            [
                "id",
                "dataset",
                "tier",
                "holder",
                "institution",
                "project",
                "state",
                "starts_on",
                "ends_on",
                "days_left",
                "agreement_state",
                "terms_accepted_at",
            ],
            db.session.scalars(rows).all(),
            lambda g: [
                g.id,
                g.dataset.name,
                g.dataset.tier.value,
                g.user.display_name,
                g.institution.name,
                g.proposal.title if g.proposal else "",
                g.state.value,
                g.starts_on.isoformat(),
                g.ends_on.isoformat(),
                g.days_left(today),
                duas[g.id].state.value if g.id in duas else "",
                g.terms_accepted_at.isoformat() if g.terms_accepted_at else "",
            ],
        )
    listing = list_page(stmt.options(*GRANT_ROW), GRANTS)
    return render_template(
        "datasets/access/grants.html",
        page=listing.page,
        form=listing.form,
        filters=filters,
        tab=tab,
        tabs=tabs,
        sort=listing.sort,
        sorts=list(GRANTS.sorts),
        duas=_duas([g.id for g in listing.page.items]),
        today=today,
        live=LIVE_GRANTS,
        export=permissions.can_export_grants(current_user),
        expiring_days=EXPIRING_DAYS,
    )


# --- one grant -----------------------------------------------------------------------------------


def _renewal(grant: Grant) -> dict[str, Any] | None:
    """What "ask for more time" offers the viewer on ``grant``: a request to the stewards
    (controlled; or the one already open), accepting the terms again (registered), or nothing."""
    if grant.dataset.tier == AccessTier.CONTROLLED:
        if not permissions.can_request_renewal(current_user, grant):
            return None
        pending = services.open_request(db.session, grant.dataset_id, grant.user_id)
        return {"pending": pending}
    if permissions.can_reaccept_terms(current_user, grant):
        return {"pending": None}
    return None


def _grant_page(grant: Grant, revoke_form: ReasonForm | None = None) -> str:
    may_revoke = GRANT_WORKFLOW.may(current_user, grant, "revoke")
    if may_revoke and revoke_form is None:
        revoke_form = _revoke_form(posted=False)
    events, names = _history(grant)
    return render_template(
        "datasets/access/grant_detail.html",
        grant=grant,
        dataset=grant.dataset,
        agreements=_agreements_of(grant) if grant.dataset.tier == AccessTier.CONTROLLED else [],
        location=grant.dataset.location
        if grant.state == GrantState.ACTIVE
        and permissions.can_see_location(current_user, grant.dataset)
        else None,
        revoke_form=revoke_form if may_revoke else None,
        renewal=_renewal(grant),
        events=events,
        names=names,
        today=utcnow().date(),
    )


def _revoke_form(*, posted: bool) -> ReasonForm:
    return ReasonForm(
        prefix="revoke",
        label="Why access is revoked",
        help="Sent to the holder. Access ends at once and cannot be restored; they may ask again.",
        **({} if posted else {"formdata": None}),
    )


@bp.get("/access/<int:grant_id>")
@login_required
def grant_detail(grant_id: int) -> ResponseReturnValue:
    """A grant: its state and period, its data-use agreement (state, who signs next), where the
    data is (to those allowed, while it is active), its history; revocation for stewards and
    program staff, "ask for more time" for the holder."""
    return _grant_page(_grant(grant_id))


@bp.post("/access/<int:grant_id>/revoke")
@login_required
def revoke(grant_id: int) -> ResponseReturnValue:
    """A steward of the dataset or program staff revoke access, with the reason: at once."""
    grant = _grant(grant_id)
    check(permissions.can_revoke_grant, current_user, grant)
    form = _revoke_form(posted=True)
    if form.validate_on_submit():
        ok, _ = commit_or_flash(
            lambda: services.revoke(
                db.session, grant, actor=current_user, reason=form.reason.data or ""
            )
        )
        if ok:
            flash(f"Access revoked; {grant.user.display_name} is told why.", "success")
            return redirect(url_for(".grant_detail", grant_id=grant.id))
    return _grant_page(grant, form), 422


def _ask_stewards_for_time(grant: Grant) -> ResponseReturnValue:
    """Controlled: a renewal request to the dataset's stewards (or the one already open)."""
    check(permissions.can_request_renewal, current_user, grant)
    dataset = grant.dataset
    pending = services.open_request(db.session, dataset.id, grant.user_id)
    if pending is not None:
        return render_template(
            "datasets/access/renew.html", grant=grant, dataset=dataset, form=None, pending=pending
        ), (409 if request.method == "POST" else 200)
    form = RenewalForm()
    return form_page(
        form,
        lambda: services.request_renewal(
            db.session, grant, actor=current_user, intended_use=form.intended_use.data or ""
        ),
        template="datasets/access/renew.html",
        done=lambda r: (
            "Your request for more time was sent to the dataset's stewards.",
            url_for(".request_detail", request_id=r.id),
        ),
        grant=grant,
        dataset=dataset,
        pending=None,
    )


def _accept_terms_again(grant: Grant) -> ResponseReturnValue:
    """Registered: the holder accepts the terms again (the box must be ticked)."""
    check(permissions.can_reaccept_terms, current_user, grant)
    dataset = grant.dataset
    form = AcceptForm()
    return form_page(
        form,
        lambda: services.accept_terms(
            db.session, dataset, actor=current_user, accepted=bool(form.accepted.data)
        ),
        template="datasets/access/renew.html",
        done=lambda g: (
            f"You accepted the terms again: access until {g.ends_on:%d %B %Y}.",
            url_for(".grant_detail", grant_id=g.id),
        ),
        grant=grant,
        dataset=dataset,
        pending=None,
        longest=services.longest_end(dataset),
    )


@bp.route("/access/<int:grant_id>/renew", methods=["GET", "POST"])
@login_required
def renew(grant_id: int) -> ResponseReturnValue:
    """Ask for more time: for a controlled dataset, a renewal request to its stewards (why it is
    still needed); for a registered one, accepting its terms again (access then runs for the
    dataset's longest period from today)."""
    grant = _grant(grant_id)
    if grant.dataset.tier == AccessTier.CONTROLLED:
        return _ask_stewards_for_time(grant)
    return _accept_terms_again(grant)
