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


def _guarded_add(
    session: AnySession, model: type[CallResource] | type[Resource], id_: int, hours: int
) -> int | None:
    """``allocated_hours += hours`` on one row if it stays within its limit: None when it did,
    else the hours left there (nothing changed)."""
    limit = CallResource.budget_hours if model is CallResource else Resource.capacity_hours
    took = session.execute(
        update(model)
        .where(model.id == id_, model.allocated_hours + hours <= limit)
        .values(allocated_hours=model.allocated_hours + hours)
        .execution_options(synchronize_session=False)
    )
    if getattr(took, "rowcount", 0) == 1:
        return None
    left = session.execute(select(limit - model.allocated_hours).where(model.id == id_))
    return int(left.scalar_one())


def take(session: AnySession, call_resource: CallResource, hours: int) -> None:
    """Take ``hours`` from the call's budget on the resource and from the resource's capacity, or
    raise ConflictError (nothing taken; the caller's transaction is rolled back)."""
    if hours <= 0:
        raise ValueError("hours must be positive")
    name = call_resource.resource.name
    left = _guarded_add(session, CallResource, call_resource.id, hours)
    if left is not None:
        raise ConflictError(
            f"The call's budget on {name} has {left:,} GPU-hours left; "
            f"{hours:,} do not fit. Nothing was allocated."
        )
    left = _guarded_add(session, Resource, call_resource.resource_id, hours)
    if left is not None:
        raise ConflictError(
            f"{name} has {left:,} GPU-hours of capacity left; "
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
