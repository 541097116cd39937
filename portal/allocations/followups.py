"""Follow-up requests on allocations, and the allocation reviewers who decide them.

The PI or a co-PI of a project asks about one of its allocations:

- **more hours** (supplement): approving takes them from the call's budget on the resource and
  the resource's capacity (``budget.take``: the guarded UPDATE) and raises the allocation's hours;
  a used-up allocation becomes active again. Hours that no longer fit refuse the approval, with
  the reason, and nothing changes;
- **more time** (extension): a later end date, at most ``MAX_EXTENSION_MONTHS`` past the present one;
- **a renewal**: a new allocation for a new period (from the approval, for the months asked),
  on the same call's budget, linked to the old one (``renewed_from_id``) — after a short review:
  the decision and its note;
- **hours given back** (return): unused hours go back to the call's budget and the resource at
  once; nobody decides it, and the allocation never falls below what it used.

submitted → approved / declined (program staff, or an allocation reviewer of the resource or the
call within their ceiling) / withdrawn (the PI or a co-PI). Every step goes through the shared
runner (compare-and-set: of two deciders at once one decision stands) with its audit event and mail.
The acting user is passed in; services flush, the caller commits (and rolls back on a refusal).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import Any

from sqlalchemy import BigInteger, cast, delete, or_, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import object_session

from portal.allocations import budget, emails, permissions
from portal.allocations.models import (
    MAX_EXTENSION_MONTHS,
    SECONDS_PER_HOUR,
    Allocation,
    AllocationReviewer,
    AllocationState,
    FollowUpKind,
    FollowUpRequest,
    FollowUpState,
)
from portal.allocations.services import activate_if_usable
from portal.allocations.workflow import ALLOCATION_WORKFLOW, usable_blocker
from portal.auth.models import Role, User
from portal.core import audit
from portal.core.dates import add_months
from portal.core.errors import ConflictError, ValidationError
from portal.core.models import AnySession, utcnow
from portal.core.permissions import check
from portal.core.workflow import Step, Transition, Workflow
from portal.notifications.models import SentReminder
from portal.proposals.models import Call, ProposalState, Resource

A = AllocationState
K = FollowUpKind
W = FollowUpState

#: The longest justification kept.
MAX_JUSTIFICATION = 4000

#: The allocation states in which each kind may be asked for, and granted.
OPEN_TO: dict[FollowUpKind, tuple[AllocationState, ...]] = {
    K.SUPPLEMENT: (A.PENDING, A.ACTIVE, A.EXHAUSTED),
    K.EXTENSION: (A.PENDING, A.ACTIVE, A.EXHAUSTED),
    K.RENEWAL: (A.ACTIVE, A.EXHAUSTED, A.EXPIRED),
    K.RETURN: (A.PENDING, A.ACTIVE, A.SUSPENDED),
}

#: The reminders of the allocation's end that an extension sends again, for the new end.
END_NOTICES = ("allocations.ends_30", "allocations.ends_7")


# --- what may be asked -------------------------------------------------------------------------


def returnable_hours(allocation: Allocation) -> int:
    """The whole GPU-hours that may be given back now: all but those used (a started hour counts)
    and never the last one (an allocation has hours)."""
    used = -(-allocation.used_gpu_seconds // SECONDS_PER_HOUR)
    return max(0, allocation.hours - max(1, used))


def latest_extension(allocation: Allocation) -> dt.date:
    """The latest end date an extension may ask for now."""
    return add_months(allocation.ends_on, MAX_EXTENSION_MONTHS)


def renewed_by(session: AnySession, allocation: Allocation) -> Allocation | None:
    """The allocation that renews ``allocation``, if it was renewed."""
    return session.scalar(select(Allocation).where(Allocation.renewed_from_id == allocation.id))


def renewal_chain(
    session: AnySession, allocation: Allocation
) -> tuple[Allocation | None, Allocation | None]:
    """(the allocation ``allocation`` renews, the one that renews it), in one query."""
    links = session.scalars(
        select(Allocation).where(
            or_(
                Allocation.id == allocation.renewed_from_id,
                Allocation.renewed_from_id == allocation.id,
            )
        )
    ).all()
    renews = next((a for a in links if a.id == allocation.renewed_from_id), None)
    return renews, next((a for a in links if a.renewed_from_id == allocation.id), None)


def kinds_open(
    session: AnySession, allocation: Allocation, requests: list[FollowUpRequest]
) -> list[FollowUpKind]:
    """The kinds of request that may be made about ``allocation`` now, given its ``requests``:
    open to its state, none of the kind waiting already, and hours left to give back."""
    waiting = {r.kind for r in requests if r.state == W.SUBMITTED}
    return [
        kind
        for kind in K
        if kind not in waiting
        and (kind != K.RETURN or returnable_hours(allocation) > 0)
        and _refusal(session, allocation, kind) is None
    ]


def _refusal(session: AnySession, allocation: Allocation, kind: FollowUpKind) -> str | None:
    """Why a request of ``kind`` cannot be made (or granted) now, whatever it asks; None if it can."""
    if allocation.state not in OPEN_TO[kind]:
        return (
            f"{kind.label} cannot be asked for while the allocation is "
            f"{allocation.state.label.lower()}."
        )
    if allocation.proposal.state != ProposalState.ACTIVE:
        return "The project is no longer active."
    if kind != K.RENEWAL and allocation.ends_on < utcnow().date():
        return "This allocation's period has ended: ask for a renewal instead."
    if kind == K.RENEWAL and renewed_by(session, allocation) is not None:
        return "This allocation has been renewed already."
    return None


def _check_asked(
    session: AnySession,
    allocation: Allocation,
    kind: FollowUpKind,
    *,
    hours: int | None,
    ends_on: dt.date | None,
    months: int | None,
) -> None:
    """Refuse (ConflictError, ValidationError) a request that cannot be made or granted now."""
    refusal = _refusal(session, allocation, kind)
    if refusal is not None:
        raise ConflictError(refusal)
    cr = allocation.call_resource
    if kind in (K.SUPPLEMENT, K.RENEWAL) and not (hours and 0 < hours <= cr.max_request_hours):
        raise ValidationError(
            f"Ask for between 1 and {cr.max_request_hours:,} GPU-hours (the most one project may "
            "ask for on this resource in this call)."
        )
    if kind == K.RENEWAL and not (months and 0 < months <= cr.resource.period_months):
        raise ValidationError(
            f"A new period is between 1 and {cr.resource.period_months} months long."
        )
    if kind == K.EXTENSION:
        latest = latest_extension(allocation)
        if ends_on is None or not allocation.ends_on < ends_on <= latest:
            raise ValidationError(
                f"Choose a new end date after {allocation.ends_on.strftime('%d %B %Y')} and no "
                f"later than {latest.strftime('%d %B %Y')} ({MAX_EXTENSION_MONTHS} months more)."
            )
    if kind == K.RETURN:
        most = returnable_hours(allocation)
        if not (hours and 0 < hours <= most):
            raise ValidationError(
                f"Give back between 1 and {most:,} GPU-hours: the allocation keeps what it used."
                if most
                else "This allocation has no unused GPU-hours to give back."
            )


# --- the workflow ------------------------------------------------------------------------------

TRANSITIONS: dict[str, Transition[W]] = {
    "approve": Transition(frozenset({W.SUBMITTED}), W.APPROVED, "Approve"),
    "decline": Transition(
        frozenset({W.SUBMITTED}), W.DECLINED, "Decline", needs_reason=True, style="danger"
    ),
    "withdraw": Transition(
        frozenset({W.SUBMITTED}), W.WITHDRAWN, "Withdraw the request", style="secondary"
    ),
    # Giving hours back frees them at once: the PI's own request, taken as it is made.
    "give_back": Transition(frozenset({W.SUBMITTED}), W.APPROVED, "Give the hours back"),
}


def _fields(step: Step[FollowUpRequest, W]) -> dict[str, Any]:
    now = utcnow()
    out: dict[str, Any] = {"state_changed_at": now}
    if step.action in ("approve", "decline", "give_back"):
        out.update(decided_at=now, decided_by_id=step.actor.id, decision_note=step.reason)
    return out


def _grantable(step: Step[FollowUpRequest, W]) -> None:
    """What was asked still fits the allocation as it is now (it may have changed meanwhile);
    hours for a used-up allocation make it active again, so it must be usable."""
    request = step.obj
    allocation = request.allocation
    _check_asked(
        _session_of(allocation),
        allocation,
        request.kind,
        hours=request.hours,
        ends_on=request.ends_on,
        months=request.months,
    )
    if request.kind == K.SUPPLEMENT and allocation.state == A.EXHAUSTED:
        blocker = usable_blocker(allocation)
        if blocker is not None:
            raise ConflictError(
                f"This allocation is used up and cannot be used now: {blocker.message}"
            )


def _session_of(obj: Any) -> AnySession:
    session = object_session(obj)
    assert session is not None
    return session


def _guarded(
    session: AnySession, allocation: Allocation, kind: FollowUpKind, **values: Any
) -> None:
    """Change ``allocation`` in one UPDATE, only while it is in a state ``kind`` is open to (a
    sweep or a suspension may have moved it since it was read); else ConflictError."""
    changed = session.execute(
        update(Allocation)
        .where(Allocation.id == allocation.id, Allocation.state.in_(OPEN_TO[kind]))
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if getattr(changed, "rowcount", 0) != 1:
        session.refresh(allocation, ["state"])
        raise ConflictError(
            f"The allocation is {allocation.state.label.lower()} now: nothing was changed."
        )
    session.refresh(allocation, ["hours", "ends_on", "used_gpu_seconds", "state"])


def _add_hours(session: AnySession, request: FollowUpRequest, actor: Any) -> None:
    allocation = request.allocation
    hours = request.hours_asked
    budget.take(session, allocation.call_resource, hours)
    _guarded(session, allocation, K.SUPPLEMENT, hours=Allocation.hours + hours)
    if (
        allocation.state == A.EXHAUSTED
        and allocation.used_gpu_seconds < allocation.hours * SECONDS_PER_HOUR
    ):
        ALLOCATION_WORKFLOW.run(session, allocation, "replenish", actor=actor, request=request.id)


def _extend(session: AnySession, request: FollowUpRequest) -> None:
    allocation = request.allocation
    assert request.ends_on is not None
    _guarded(session, allocation, K.EXTENSION, ends_on=request.ends_on)
    # The reminders of the end are sent again, for the new end date.
    session.execute(
        delete(SentReminder).where(
            SentReminder.rule.in_(END_NOTICES), SentReminder.object_id == allocation.id
        )
    )


def renewal_account(allocation: Allocation) -> str:
    """The scheduler account of a renewal of ``allocation``: ``atom-42-h100-r1``, ``…-r2``."""
    found = re.fullmatch(r"(.*)-r(\d+)", allocation.account)
    base, n = (found[1], int(found[2])) if found else (allocation.account, 0)
    return f"{base}-r{n + 1}"


def _renew(session: AnySession, request: FollowUpRequest, actor: Any) -> Allocation:
    old = request.allocation
    cr = old.call_resource
    hours, months = request.hours_asked, request.months or cr.resource.period_months
    budget.take(session, cr, hours)
    start = utcnow().date()
    new = Allocation(
        award_id=old.award_id,
        proposal_id=old.proposal_id,
        call_resource_id=cr.id,
        resource_id=old.resource_id,
        institution_id=old.institution_id,
        hours=hours,
        starts_on=start,
        ends_on=add_months(start, months),
        cluster=old.cluster,
        account=renewal_account(old),
        state=A.PENDING,
        renewed_from_id=old.id,
    )
    session.add(new)
    session.flush()
    audit.record(session, "allocation.create", actor=actor, obj=new, hours=hours, renews=old.id)
    request.renewal_id = new.id
    session.flush()
    activate_if_usable(session, new, actor=actor)
    return new


def _grant(session: AnySession, step: Step[FollowUpRequest, W]) -> None:
    """Give what was asked: hours from the budget, a later end, or a new allocation."""
    request = step.obj
    if request.kind == K.SUPPLEMENT:
        _add_hours(session, request, step.actor)
    elif request.kind == K.EXTENSION:
        _extend(session, request)
    elif request.kind == K.RENEWAL:
        _renew(session, request, step.actor)


def _give_back(session: AnySession, step: Step[FollowUpRequest, W]) -> None:
    """Lower the allocation's hours (never below what it used) and free them in the call's budget
    and the resource's capacity at once; an allocation left with only what it used is used up."""
    request = step.obj
    allocation = request.allocation
    hours = request.hours_asked
    left = Allocation.hours - hours
    changed = session.execute(
        update(Allocation)
        .where(
            Allocation.id == allocation.id,
            Allocation.state.in_(OPEN_TO[K.RETURN]),
            left >= 1,
            cast(left, BigInteger) * SECONDS_PER_HOUR >= Allocation.used_gpu_seconds,
        )
        .values(hours=left)
        .execution_options(synchronize_session=False)
    )
    session.refresh(allocation, ["hours", "used_gpu_seconds", "state"])
    if getattr(changed, "rowcount", 0) != 1:
        raise ConflictError(
            f"Only {returnable_hours(allocation):,} GPU-hours of this allocation are unused now: "
            "nothing was given back."
        )
    budget.give_back(session, allocation.call_resource, hours, to_call=True)
    if (
        allocation.state == A.ACTIVE
        and allocation.used_gpu_seconds >= allocation.hours * SECONDS_PER_HOUR
    ):
        ALLOCATION_WORKFLOW.run(session, allocation, "exhaust", actor=step.actor)


def _returnable(step: Step[FollowUpRequest, W]) -> None:
    request = step.obj
    _check_asked(
        _session_of(request),
        request.allocation,
        request.kind,
        hours=request.hours,
        ends_on=None,
        months=None,
    )


FOLLOW_UP_WORKFLOW: Workflow[FollowUpRequest, W] = Workflow(
    name="allocation_request",
    noun="request",
    model=FollowUpRequest,
    transitions=TRANSITIONS,
    permissions={
        "approve": permissions.can_decide_follow_up,
        "decline": permissions.can_decide_follow_up,
        "withdraw": permissions.can_withdraw_follow_up,
        "give_back": permissions.can_give_back_hours,
    },
    mails={
        "approve": emails.request_decided,
        "decline": emails.request_decided,
        "withdraw": emails.request_withdrawn,
        "give_back": emails.hours_returned,
    },
    silent=frozenset(),
    fields=_fields,
    checks={"approve": _grantable, "give_back": _returnable},
    effects={"approve": _grant, "give_back": _give_back},
)


# --- services ----------------------------------------------------------------------------------


def submit_request(
    session: AnySession,
    allocation: Allocation,
    kind: FollowUpKind,
    *,
    actor: User,
    hours: int | None = None,
    ends_on: dt.date | None = None,
    months: int | None = None,
    justification: str = "",
) -> FollowUpRequest:
    """The PI or a co-PI asks for more hours, more time or a renewal (whoever may decide it is
    asked by mail), or gives unused hours back (freed at once). One open request of each kind per
    allocation; what is asked must fit the allocation and the call's limits now."""
    check(permissions.can_request_follow_up, actor, allocation)
    hours = hours if kind != K.EXTENSION else None
    ends_on = ends_on if kind == K.EXTENSION else None
    months = months if kind == K.RENEWAL else None
    justification = (justification or "").strip()[:MAX_JUSTIFICATION]
    if kind != K.RETURN and not justification:
        raise ValidationError("Say why the project needs it: the decider reads this first.")
    _check_asked(session, allocation, kind, hours=hours, ends_on=ends_on, months=months)
    request = FollowUpRequest(
        allocation=allocation,
        kind=kind,
        state=W.SUBMITTED,
        requested_by_id=actor.id,
        hours=hours,
        ends_on=ends_on,
        months=months,
        justification=justification,
    )
    try:
        with session.begin_nested():
            session.add(request)
            session.flush()
    except IntegrityError:
        raise ConflictError(
            f"This allocation already has a request for {kind.label.lower()} waiting for a "
            "decision: withdraw it first, or wait for the decision."
        ) from None
    audit.record(
        session,
        "allocation_request.submit",
        actor=actor,
        obj=request,
        allocation=allocation.id,
        kind=kind.value,
        hours=hours,
        ends_on=ends_on.isoformat() if ends_on else None,
        months=months,
    )
    if kind == K.RETURN:
        return FOLLOW_UP_WORKFLOW.run(session, request, "give_back", actor=actor)
    emails.request_submitted(session, request)
    return request


def decide_request(
    session: AnySession,
    request: FollowUpRequest,
    action: str,
    *,
    actor: User,
    note: str | None = None,
) -> FollowUpRequest:
    """Approve (with an optional note: the short review) or decline (with the reason) — program
    staff, or an allocation reviewer of the resource or call within their ceiling. Approving more
    hours or a renewal takes them from the budget, or is refused with the reason (and the caller
    rolls back: nothing changed). Of two deciders at once, one decision stands."""
    if action not in ("approve", "decline"):
        raise ValidationError("Choose to approve or to decline.")
    return FOLLOW_UP_WORKFLOW.run(session, request, action, actor=actor, reason=note)


def withdraw_request(
    session: AnySession, request: FollowUpRequest, *, actor: User
) -> FollowUpRequest:
    """The PI or a co-PI takes back a request still waiting for a decision."""
    return FOLLOW_UP_WORKFLOW.run(session, request, "withdraw", actor=actor)


# --- allocation reviewers ----------------------------------------------------------------------


def assign_reviewer(
    session: AnySession,
    *,
    actor: User,
    user: User,
    resource: Resource | None = None,
    call: Call | None = None,
    ceiling_hours: int | None = None,
) -> AllocationReviewer:
    """Program staff let a reviewer decide the follow-up requests on one resource, or on one
    call's allocations, each up to ``ceiling_hours`` (None: any size). Assigning the same
    reviewer to the same resource or call again sets the new ceiling."""
    check(permissions.can_assign_allocation_reviewers, actor)
    if (resource is None) == (call is None):
        raise ValidationError("Choose either a resource or a call.")
    if user.is_disabled or not user.has_role(Role.REVIEWER):
        raise ValidationError(f"{user.display_name} is not in the reviewer pool.")
    if ceiling_hours is not None and ceiling_hours <= 0:
        raise ValidationError("A ceiling is a positive number of GPU-hours (or none).")
    scope = (
        AllocationReviewer.resource_id == resource.id
        if resource is not None
        else AllocationReviewer.call_id == (call.id if call else None)
    )
    found = session.scalar(
        select(AllocationReviewer).where(AllocationReviewer.user_id == user.id, scope)
    )
    where = {"resource": resource.id if resource else None, "call": call.id if call else None}
    if found is not None:
        found.ceiling_hours = ceiling_hours
        session.flush()
        audit.record(
            session,
            "allocation_reviewer.update",
            actor=actor,
            obj=found,
            user=user.id,
            ceiling_hours=ceiling_hours,
            **where,
        )
        return found
    assignment = AllocationReviewer(
        user_id=user.id,
        resource_id=resource.id if resource is not None else None,
        call_id=call.id if call is not None else None,
        ceiling_hours=ceiling_hours,
        assigned_by_id=actor.id,
    )
    try:
        with session.begin_nested():
            session.add(assignment)
            session.flush()
    except IntegrityError:
        raise ConflictError(
            f"{user.display_name} was assigned there meanwhile: reload the page."
        ) from None
    audit.record(
        session,
        "allocation_reviewer.assign",
        actor=actor,
        obj=assignment,
        user=user.id,
        ceiling_hours=ceiling_hours,
        **where,
    )
    return assignment


def unassign_reviewer(session: AnySession, assignment: AllocationReviewer, *, actor: User) -> None:
    """Program staff end a reviewer's assignment (requests already decided stay decided)."""
    check(permissions.can_assign_allocation_reviewers, actor)
    audit.record(
        session,
        "allocation_reviewer.remove",
        actor=actor,
        obj=assignment,
        user=assignment.user_id,
        resource=assignment.resource_id,
        call=assignment.call_id,
    )
    session.delete(assignment)
    session.flush()
