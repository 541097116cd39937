"""Who may see allocations and resources' budgets, and who (or what) takes each step of an
allocation. Each ``can_*`` rule says who in its docstring; ``visible_allocations`` is the same rule
as a list filter and ``holders_of`` the same rule as the recipients of an allocation's mail.

Most steps of an allocation follow facts, not a person's choice: it becomes active when the step
that opens its gate is taken (a signature, an approval, a reinstatement), is used up when usage
reaches its hours, expires at its end date (the scheduled sweep, acting as nobody).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Select, and_, exists, false, func, literal, or_, select
from sqlalchemy.orm import object_session
from sqlalchemy.sql.elements import ColumnElement

from portal.allocations.models import (
    SECONDS_PER_HOUR,
    Allocation,
    AllocationReviewer,
    FollowUpKind,
    FollowUpRequest,
    FollowUpState,
)
from portal.auth.models import Role, RoleGrant, User
from portal.auth.permissions import as_user, is_staff
from portal.core.memo import per_request
from portal.core.models import utcnow
from portal.core.permissions import rule
from portal.proposals.models import EDITORS, CallResource, TeamMember


@rule("You cannot see this allocation.")
def can_view_allocation(user: Any, allocation: Allocation) -> bool:
    """Program staff; the project's team; the signing officials of its institution."""
    u = as_user(user)
    if u is None:
        return False
    return (
        is_staff(u)
        or any(m.user_id == u.id for m in allocation.proposal.team)
        or allocation.institution_id in u.institution_ids_for(Role.SIGNING_OFFICIAL)
    )


def visible_allocations(user: Any) -> Select[Allocation]:
    """``can_view_allocation`` as a list filter."""
    q = select(Allocation)
    u = as_user(user)
    if u is None:
        return q.where(false())
    if is_staff(u):
        return q
    team = exists().where(
        TeamMember.proposal_id == Allocation.proposal_id, TeamMember.user_id == u.id
    )
    official = Allocation.institution_id.in_(
        select(RoleGrant.institution_id).where(
            RoleGrant.user_id == u.id, RoleGrant.role == Role.SIGNING_OFFICIAL
        )
    )
    return q.where(or_(team, official))


def holders_of(allocation: Allocation) -> Select[User]:
    """Whom an allocation's mail tells: its project's team (who may see it and use the hours)."""
    return (
        select(User)
        .join(TeamMember, TeamMember.user_id == User.id)
        .where(TeamMember.proposal_id == allocation.proposal_id, User.is_disabled.is_(False))
        .order_by(User.id)
    )


@rule("Only program staff see resources' budgets and usage.")
def can_view_resources(user: Any) -> bool:
    """Program staff."""
    return is_staff(user)


@rule("Activation follows the step that opens its gate; nobody activates an allocation by hand.")
def can_activate(user: Any, allocation: Allocation) -> bool:
    """Whoever takes the step that opens the gate (the agreement's last signature, the approval,
    the reinstatement): anyone logged in, as the gate itself decides."""
    return as_user(user) is not None


@rule("Only program staff suspend and resume allocations.")
def can_suspend(user: Any, allocation: Allocation) -> bool:
    """Program staff (suspending an institution suspends its allocations)."""
    return is_staff(user)


@rule("An allocation is used up only when its usage reaches its hours.")
def can_exhaust(user: Any, allocation: Allocation) -> bool:
    """Nobody by choice: the usage that reaches its hours (an import, the operators' push)."""
    return allocation.used_gpu_seconds >= allocation.hours * SECONDS_PER_HOUR


@rule("An allocation that was used up is active again only once its hours exceed its usage.")
def can_replenish(user: Any, allocation: Allocation) -> bool:
    """Nobody by choice: the approval of a supplement that raises its hours above its usage (its
    decider is the actor)."""
    return (
        as_user(user) is not None
        and allocation.used_gpu_seconds < allocation.hours * SECONDS_PER_HOUR
    )


@rule("An allocation expires only after its end date.")
def can_expire(user: Any, allocation: Allocation) -> bool:
    """Nobody by choice: the scheduled sweep, once the end date has passed."""
    return allocation.ends_on < utcnow().date()


# --- follow-up requests: more hours, more time, a renewal, hours given back ---------------------
# Asked for by the project's PI and co-PIs; decided by program staff, or by allocation reviewers
# assigned to the allocation's resource or its call, up to their ceiling. Nobody decides a request
# on a project they are on the team of.


def _requester(u: User, allocation: Allocation) -> bool:
    return any(m.user_id == u.id and m.role in EDITORS for m in allocation.proposal.team)


def _on_team(u: User, allocation: Allocation) -> bool:
    return any(m.user_id == u.id for m in allocation.proposal.team)


@rule(
    "Only the project's principal investigator and co-investigators ask for more hours, more "
    "time or a renewal, or give hours back."
)
def can_request_follow_up(user: Any, allocation: Allocation) -> bool:
    """The PI and co-PIs of the allocation's project."""
    u = as_user(user)
    return u is not None and _requester(u, allocation)


@per_request
def _reviewer_assignments(u: User) -> Sequence[AllocationReviewer]:
    """``u``'s assignments as an allocation reviewer (none unless ``u`` holds the reviewer role)."""
    session = object_session(u)
    if session is None or not u.has_role(Role.REVIEWER):
        return ()
    return session.scalars(
        select(AllocationReviewer).where(AllocationReviewer.user_id == u.id)
    ).all()


def is_allocation_decider(user: Any) -> bool:
    """Program staff, and reviewers assigned to decide follow-up requests somewhere."""
    u = as_user(user)
    return u is not None and (is_staff(u) or bool(_reviewer_assignments(u)))


@rule(
    "Only program staff, or an allocation reviewer of this resource or call within their "
    "ceiling, decide this request."
)
def can_decide_follow_up(user: Any, request: FollowUpRequest) -> bool:
    """Program staff; allocation reviewers assigned to the allocation's resource or its call, for
    requests within their ceiling in GPU-hours — never on their own project. Hours given back
    need nobody's decision."""
    u = as_user(user)
    allocation = request.allocation
    if u is None or request.kind == FollowUpKind.RETURN or _on_team(u, allocation):
        return False
    return is_staff(u) or any(
        a.covers(allocation, request.hours_asked) for a in _reviewer_assignments(u)
    )


@rule("You cannot see this request.")
def can_view_follow_up(user: Any, request: FollowUpRequest) -> bool:
    """Whoever may see its allocation, and whoever may decide it."""
    return can_view_allocation(user, request.allocation) or can_decide_follow_up(user, request)


@rule("Only the project's principal investigator and co-investigators withdraw its requests.")
def can_withdraw_follow_up(user: Any, request: FollowUpRequest) -> bool:
    """The PI and co-PIs of the project (whoever of them asked)."""
    return can_request_follow_up(user, request.allocation)


@rule("Only the project's principal investigator and co-investigators give its hours back.")
def can_give_back_hours(user: Any, request: FollowUpRequest) -> bool:
    """The PI and co-PIs of the project, for a request to give hours back (which frees them at
    once: nobody else decides it)."""
    return request.kind == FollowUpKind.RETURN and can_request_follow_up(user, request.allocation)


@rule("Only program staff assign allocation reviewers.")
def can_assign_allocation_reviewers(user: Any) -> bool:
    """Program staff (program officers and administrators)."""
    return is_staff(user)


# --- the same rules as SQL: lists and recipients -----------------------------------------------


def _decider_sql(
    user_id: Any, *, hours: Any, resource_id: Any, call_id: Any, proposal_id: Any
) -> ColumnElement[bool]:
    """SQL for ``can_decide_follow_up`` (but for its kind: hours given back are decided by
    nobody): the user ``user_id`` may decide a request of ``hours`` GPU-hours (0: an extension)
    about an allocation of the project ``proposal_id`` on ``resource_id`` from the call
    ``call_id`` — columns, or plain values for one known request."""
    staff = exists().where(
        RoleGrant.user_id == user_id, RoleGrant.role.in_((Role.PROGRAM_OFFICER, Role.ADMIN))
    )
    reviewer = and_(
        exists().where(RoleGrant.user_id == user_id, RoleGrant.role == Role.REVIEWER),
        exists().where(
            AllocationReviewer.user_id == user_id,
            or_(
                AllocationReviewer.resource_id == resource_id,
                AllocationReviewer.call_id == call_id,
            ),
            or_(
                AllocationReviewer.ceiling_hours.is_(None),
                AllocationReviewer.ceiling_hours >= hours,
            ),
        ),
    )
    on_team = exists().where(TeamMember.proposal_id == proposal_id, TeamMember.user_id == user_id)
    return and_(~on_team, or_(staff, reviewer))


def _decides_listed(user: User) -> ColumnElement[bool]:
    """``can_decide_follow_up`` for ``user`` over the rows of a query of requests joined to their
    allocations."""
    # Correlated by name: it sits two levels below the query of allocations it reads.
    call_id = (
        select(CallResource.call_id)
        .where(CallResource.id == Allocation.call_resource_id)
        .correlate(Allocation)
        .scalar_subquery()
    )
    return and_(
        FollowUpRequest.kind != FollowUpKind.RETURN,
        _decider_sql(
            literal(user.id),
            hours=func.coalesce(FollowUpRequest.hours, 0),
            resource_id=Allocation.resource_id,
            call_id=call_id,
            proposal_id=Allocation.proposal_id,
        ),
    )


def requests_to_decide(user: Any) -> Select[FollowUpRequest]:
    """The submitted requests ``user`` may decide: the "Requests to decide" queue."""
    q = select(FollowUpRequest).join(Allocation, Allocation.id == FollowUpRequest.allocation_id)
    u = as_user(user)
    if u is None:
        return q.where(false())
    return q.where(FollowUpRequest.state == FollowUpState.SUBMITTED, _decides_listed(u))


def visible_follow_ups(user: Any) -> Select[FollowUpRequest]:
    """``can_view_follow_up`` as a list filter."""
    q = select(FollowUpRequest).join(Allocation, Allocation.id == FollowUpRequest.allocation_id)
    u = as_user(user)
    if u is None:
        return q.where(false())
    if is_staff(u):
        return q
    sees_allocation = Allocation.id.in_(visible_allocations(u).with_only_columns(Allocation.id))
    return q.where(or_(sees_allocation, _decides_listed(u)))


def deciders_of_request(request: FollowUpRequest) -> Select[User]:
    """The people ``can_decide_follow_up`` lets decide ``request``: whom its mail asks."""
    allocation = request.allocation
    if request.kind == FollowUpKind.RETURN:
        return select(User).where(false())
    return (
        select(User)
        .where(
            User.is_disabled.is_(False),
            _decider_sql(
                User.id,
                hours=request.hours_asked,
                resource_id=allocation.resource_id,
                call_id=allocation.call_resource.call_id,
                proposal_id=allocation.proposal_id,
            ),
        )
        .order_by(User.id)
    )


def requesters_of(allocation: Allocation) -> Select[User]:
    """The people ``can_request_follow_up`` lets ask about ``allocation``: its PI and co-PIs."""
    return (
        select(User)
        .join(TeamMember, TeamMember.user_id == User.id)
        .where(
            TeamMember.proposal_id == allocation.proposal_id,
            TeamMember.role.in_(EDITORS),
            User.is_disabled.is_(False),
        )
        .order_by(User.id)
    )
