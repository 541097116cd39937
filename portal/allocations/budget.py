"""The finite budgets GPU-hours come out of: a call's budget on a resource, and the resource's
capacity. Both are counters changed only by one guarded UPDATE each —
``SET allocated = allocated + :h WHERE id = :id AND allocated + :h <= limit`` — whose row count
says whether the hours fit, so no interleaving of approvals can over-spend, on SQLite or
PostgreSQL (../shared/SECURITY-NOTES.md measured the alternatives); a CHECK constraint on each
counter is the backstop."""

from __future__ import annotations

from sqlalchemy import select, update

from portal.core.errors import ConflictError
from portal.core.models import AnySession
from portal.proposals.models import CallResource, Resource


def _left(session: AnySession, model: type[CallResource] | type[Resource], id_: int) -> int:
    """What is left of the budget (a call's) or the capacity (a resource's) now."""
    limit = CallResource.budget_hours if model is CallResource else Resource.capacity_hours
    return int(
        session.execute(select(limit - model.allocated_hours).where(model.id == id_)).scalar_one()
    )


def take(session: AnySession, call_resource: CallResource, hours: int) -> None:
    """Take ``hours`` from the call's budget on the resource and from the resource's capacity, or
    raise ConflictError (nothing taken; the caller's transaction is rolled back)."""
    if hours <= 0:
        raise ValueError("hours must be positive")
    took = session.execute(
        update(CallResource)
        .where(
            CallResource.id == call_resource.id,
            CallResource.allocated_hours + hours <= CallResource.budget_hours,
        )
        .values(allocated_hours=CallResource.allocated_hours + hours)
        .execution_options(synchronize_session=False)
    )
    if getattr(took, "rowcount", 0) != 1:
        left = _left(session, CallResource, call_resource.id)
        raise ConflictError(
            f"The call's budget on {call_resource.resource.name} has {left:,} GPU-hours left; "
            f"{hours:,} do not fit. Nothing was allocated."
        )
    took = session.execute(
        update(Resource)
        .where(
            Resource.id == call_resource.resource_id,
            Resource.allocated_hours + hours <= Resource.capacity_hours,
        )
        .values(allocated_hours=Resource.allocated_hours + hours)
        .execution_options(synchronize_session=False)
    )
    if getattr(took, "rowcount", 0) != 1:
        left = _left(session, Resource, call_resource.resource_id)
        raise ConflictError(
            f"{call_resource.resource.name} has {left:,} GPU-hours of capacity left; "
            f"{hours:,} do not fit. Nothing was allocated."
        )
    session.expire(call_resource, ["allocated_hours"])
    session.expire(call_resource.resource, ["allocated_hours"])


def give_back(
    session: AnySession, call_resource: CallResource, hours: int, *, to_call: bool
) -> None:
    """Return ``hours`` to the resource's capacity (an allocation expired or gave hours back), and
    to the call's budget too when ``to_call`` (hours returned before the end: the call may award
    them again)."""
    if hours <= 0:
        return
    session.execute(
        update(Resource)
        .where(Resource.id == call_resource.resource_id)
        .values(allocated_hours=Resource.allocated_hours - hours)
        .execution_options(synchronize_session=False)
    )
    if to_call:
        session.execute(
            update(CallResource)
            .where(CallResource.id == call_resource.id)
            .values(allocated_hours=CallResource.allocated_hours - hours)
            .execution_options(synchronize_session=False)
        )
    session.expire(call_resource, ["allocated_hours"])
    session.expire(call_resource.resource, ["allocated_hours"])
