"""Business rules for resources, calls and proposals. Services flush; the caller commits.

Team invitations are in ``portal.proposals.team``, attachments in ``portal.proposals.attachments``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from sqlalchemy import select

from portal.auth.models import User
from portal.core import audit
from portal.core.errors import ConflictError, ValidationError
from portal.core.models import AnySession
from portal.core.permissions import check
from portal.core.workflow import StaleStateError
from portal.institutions.models import Institution
from portal.proposals.checklist import license_problem
from portal.proposals.models import (
    FIELDS,
    Award,
    Call,
    CallResource,
    CallState,
    OutputKind,
    PlannedOutput,
    Proposal,
    Resource,
    ResourceRequest,
    RubricCriterion,
    TeamMember,
    TeamRole,
)
from portal.proposals.permissions import (
    can_decide_proposal,
    can_edit_proposal,
    can_manage_calls,
    can_propose,
    partner_institutions_of,
)
from portal.proposals.workflow import CALL_WORKFLOW, PROPOSAL_WORKFLOW

# --- resources ---------------------------------------------------------------------------------


def save_resource(
    session: AnySession,
    resource: Resource | None,
    *,
    actor: User,
    cluster: str,
    gpu_class: str,
    capacity_hours: int,
    period_months: int = 12,
    description: str = "",
    active: bool = True,
) -> Resource:
    """Add a GPU pool to the catalog, or change one (program staff)."""
    check(can_manage_calls, actor)
    if capacity_hours <= 0:
        raise ValidationError("The capacity must be a positive number of GPU-hours.")
    cluster, gpu_class = cluster.strip(), gpu_class.strip()
    clash = session.scalar(
        select(Resource.id).where(
            Resource.cluster == cluster,
            Resource.gpu_class == gpu_class,
            Resource.id != (resource.id if resource else 0),
        )
    )
    if clash is not None:
        raise ConflictError(f"{gpu_class} on {cluster} is already in the catalog.")
    creating = resource is None
    resource = resource or Resource()
    resource.cluster, resource.gpu_class = cluster, gpu_class
    resource.capacity_hours, resource.period_months = capacity_hours, period_months
    resource.description, resource.active = description.strip(), active
    session.add(resource)
    session.flush()
    audit.record(
        session,
        "resource.create" if creating else "resource.update",
        actor=actor,
        obj=resource,
        capacity_hours=capacity_hours,
    )
    return resource


# --- calls -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Offer:
    """A resource a call offers: its budget, and the most one proposal may ask for."""

    resource_id: int
    budget_hours: int
    max_request_hours: int


@dataclass(frozen=True)
class Criterion:
    name: str
    description: str = ""
    weight: int = 1
    scale_max: int = 5


def save_call(
    session: AnySession,
    call: Call | None,
    *,
    actor: User,
    title: str,
    description: str,
    eligibility: str,
    opens_at: dt.datetime | None,
    closes_at: dt.datetime | None,
    reviews_wanted: int,
    single_blind: bool,
    endorsement_required: bool,
    page_limit: int,
    offers: Sequence[Offer],
    criteria: Sequence[Criterion],
) -> Call:
    """Write a call (program staff). Its text may change at any time; what proposals were written
    against — the resources offered and the rubric — only while it is a draft."""
    check(can_manage_calls, actor)
    if opens_at and closes_at and closes_at <= opens_at:
        raise ValidationError("The call must close after it opens.")
    creating = call is None
    call = call or Call()
    call.title, call.description, call.eligibility = title.strip(), description, eligibility
    call.opens_at, call.closes_at = opens_at, closes_at
    call.reviews_wanted, call.single_blind = reviews_wanted, single_blind
    call.endorsement_required, call.page_limit = endorsement_required, page_limit
    session.add(call)
    if creating or call.state == CallState.DRAFT:
        _set_offers(session, call, offers)
        call.criteria = [
            RubricCriterion(
                position=i,
                name=c.name.strip(),
                description=c.description,
                weight=c.weight,
                scale_max=c.scale_max,
            )
            for i, c in enumerate(criteria)
        ]
    elif _offer_tuples(call) != [
        (o.resource_id, o.budget_hours, o.max_request_hours) for o in offers
    ]:
        raise ConflictError("The resources of a published call no longer change.")
    session.flush()
    audit.record(session, "call.create" if creating else "call.update", actor=actor, obj=call)
    return call


def _offer_tuples(call: Call) -> list[tuple[int, int, int]]:
    return [(cr.resource_id, cr.budget_hours, cr.max_request_hours) for cr in call.resources]


def _set_offers(session: AnySession, call: Call, offers: Sequence[Offer]) -> None:
    seen: set[int] = set()
    for o in offers:
        if o.resource_id in seen:
            raise ValidationError("Each resource is offered once per call.")
        seen.add(o.resource_id)
        if o.budget_hours <= 0 or not 0 < o.max_request_hours <= o.budget_hours:
            raise ValidationError(
                "Budgets are positive, and a single request may ask for at most the budget."
            )
        if session.get(Resource, o.resource_id) is None:
            raise ValidationError("That resource is not in the catalog.")
    existing = {cr.resource_id: cr for cr in call.resources}
    call.resources = [_offer(existing.get(o.resource_id), o) for o in offers]


def _offer(cr: CallResource | None, o: Offer) -> CallResource:
    cr = cr or CallResource(resource_id=o.resource_id)
    cr.budget_hours, cr.max_request_hours = o.budget_hours, o.max_request_hours
    return cr


def run_call(session: AnySession, call: Call, action: str, *, actor: User) -> Call:
    """Open, close or archive a call (``CALL_WORKFLOW``)."""
    return CALL_WORKFLOW.run(session, call, action, actor=actor)


# --- proposals ---------------------------------------------------------------------------------


def start_proposal(
    session: AnySession,
    call: Call,
    *,
    actor: User,
    title: str,
    institution: Institution | None = None,
) -> Proposal:
    """A member of a partner institution starts a draft under an open call; they are its PI."""
    check(can_propose, actor, call)
    partners = partner_institutions_of(actor)
    if institution is None:
        institution = partners[0]
    elif institution not in partners:
        raise ValidationError("Propose on behalf of a partner institution you belong to.")
    proposal = Proposal(call=call, institution=institution, title=title.strip()[:300])
    proposal.team.append(TeamMember(user_id=actor.id, role=TeamRole.PI))
    session.add(proposal)
    session.flush()
    audit.record(session, "proposal.create", actor=actor, obj=proposal, call_id=call.id)
    return proposal


@dataclass(frozen=True)
class Request:
    call_resource_id: int
    hours: int
    justification: str = ""


@dataclass(frozen=True)
class Output:
    kind: OutputKind
    license: str
    description: str = ""


def save_draft(
    session: AnySession,
    proposal: Proposal,
    *,
    actor: User,
    title: str,
    abstract: str,
    field: str,
    plan: str,
    requested_datasets: str,
    start_date: dt.date | None,
    duration_months: int | None,
    requests: Iterable[Request],
    outputs: Iterable[Output],
) -> Proposal:
    """Save the draft as it is — incomplete is fine (the checklist says what is missing), wrong is
    not: hours must be positive whole numbers within the call's cap, licences SPDX."""
    check(can_edit_proposal, actor, proposal)
    if field and field not in FIELDS:
        raise ValidationError("Choose the field of research from the list.")
    offered = {cr.id: cr for cr in proposal.call.resources}
    new_requests = []
    for r in requests:
        cr = offered.get(r.call_resource_id)
        if cr is None:
            raise ValidationError("Ask only for resources this call offers.")
        if r.hours <= 0:
            raise ValidationError(f"GPU-hours on {cr.resource.name} must be a positive number.")
        if r.hours > cr.max_request_hours:
            raise ValidationError(
                f"The call allows at most {cr.max_request_hours:,} GPU-hours on "
                f"{cr.resource.name} per proposal."
            )
        new_requests.append(r)
    new_outputs = list(outputs)
    for o in new_outputs:
        problem = license_problem(o.license.strip())
        if problem:
            raise ValidationError(problem)
    proposal.title, proposal.abstract, proposal.field = title.strip()[:300], abstract, field
    proposal.plan, proposal.requested_datasets = plan, requested_datasets
    proposal.start_date, proposal.duration_months = start_date, duration_months
    existing = {r.call_resource_id: r for r in proposal.requests}
    proposal.requests = [_request(existing.get(r.call_resource_id), r) for r in new_requests]
    proposal.outputs = [
        PlannedOutput(kind=o.kind, license=o.license.strip(), description=o.description.strip())
        for o in new_outputs
    ]
    session.flush()
    audit.record(session, "proposal.update", actor=actor, obj=proposal)
    return proposal


def _request(existing: ResourceRequest | None, r: Request) -> ResourceRequest:
    req = existing or ResourceRequest(call_resource_id=r.call_resource_id)
    req.hours, req.justification = r.hours, r.justification.strip()
    return req


def submit_proposal(session: AnySession, proposal: Proposal, *, actor: User) -> Proposal:
    """The PI submits a complete proposal to an open call: to the institution's signing officials
    first where the call wants their endorsement, else straight to review. A new version is
    frozen each time."""
    action = "submit_for_endorsement" if proposal.call.endorsement_required else "submit"
    return PROPOSAL_WORKFLOW.run(session, proposal, action, actor=actor)


def decide_endorsement(
    session: AnySession, proposal: Proposal, action: str, *, actor: User, reason: str | None = None
) -> Proposal:
    """A signing official of the proposal's institution endorses it (``endorse``) or returns it to
    the team with a reason (``return``). Of two officials deciding at once, one decision stands."""
    if action not in ("endorse", "return"):
        raise ValidationError("Choose to endorse or to return the proposal.")
    return PROPOSAL_WORKFLOW.run(session, proposal, action, actor=actor, reason=reason)


def withdraw_proposal(
    session: AnySession, proposal: Proposal, *, actor: User, reason: str | None = None
) -> Proposal:
    """The PI withdraws the proposal before a decision; it stays viewable."""
    return PROPOSAL_WORKFLOW.run(session, proposal, "withdraw", actor=actor, reason=reason)


def start_review(session: AnySession, proposal: Proposal, *, actor: User) -> Proposal:
    """Program staff start the review of a submitted proposal (when assigning its reviewers)."""
    return PROPOSAL_WORKFLOW.run(session, proposal, "start_review", actor=actor)


def decide_proposal(
    session: AnySession,
    proposal: Proposal,
    action: str,
    *,
    actor: User,
    reason: str | None = None,
    awards: dict[int, int] | None = None,
) -> Proposal:
    """Approve (with GPU-hours awarded per requested resource, each at most what was asked for:
    the proposal becomes an active project), ask for a revision, or decline — by program staff or
    the call's allocation committee. Of two deciders at once, one decision stands."""
    if action not in ("approve", "revise", "decline"):
        raise ValidationError("Choose to approve, to ask for a revision or to decline.")
    check(can_decide_proposal, actor, proposal)
    if action == "approve":
        requested = {r.call_resource_id: r.hours for r in proposal.requests}
        granted = {k: v for k, v in (awards or {}).items() if v}
        if not granted:
            raise ValidationError("Award GPU-hours on at least one requested resource.")
        for cr_id, hours in granted.items():
            if cr_id not in requested:
                raise ValidationError("Award hours only on resources the proposal asked for.")
            if not 0 < hours <= requested[cr_id]:
                raise ValidationError(
                    f"Award between 1 and {requested[cr_id]:,} GPU-hours (what was asked for)."
                )
        # Of two deciders approving at once, the second waits here until the first commits, then
        # sees the decision (rather than failing on the awards' unique key); SQLite serialises
        # writers already.
        now = session.scalar(
            select(Proposal.state).where(Proposal.id == proposal.id).with_for_update()
        )
        if now != proposal.state or proposal.awards:
            raise StaleStateError(
                "Approve: someone else has already changed this proposal "
                f"(it is {(now or proposal.state).label.lower()} now). Nothing was changed."
            )
        proposal.awards = [Award(call_resource_id=k, hours=v) for k, v in granted.items()]
        session.flush()
    return PROPOSAL_WORKFLOW.run(session, proposal, action, actor=actor, reason=reason)
