"""The check that a list can never show what a detail page would refuse (and the reverse): a
domain's ``visible_*(user)`` query filter and its ``can_view_*(user, obj)`` rule must agree for
every user and every object."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy import Select
from sqlalchemy.orm import Session


def disagreements(
    db: Session,
    query: Callable[[Any], Select[Any]],
    rule: Callable[[Any, Any], bool],
    users: Iterable[Any],
    objects: Sequence[Any],
) -> list[str]:
    """Every (user, object) where the list filter and the rule disagree, readably."""
    out = []
    ids = [o.id for o in objects]
    for user in users:
        stmt = query(user)
        model = stmt.column_descriptions[0]["entity"]
        listed = set(db.scalars(stmt.where(model.id.in_(ids))).all())
        for obj in objects:
            if (obj in listed) != rule(user, obj):
                out.append(
                    f"{user!r} {'sees' if obj in listed else 'does not see'} {obj!r} in the list, "
                    f"but the rule says {rule(user, obj)}"
                )
    return out


def recipients_disagree(
    db: Session,
    recipients: Callable[[Any], Select[Any]],
    rule: Callable[[Any, Any], bool],
    users: Iterable[Any],
    objects: Sequence[Any],
) -> list[str]:
    """Everyone a mail about an object goes to may act on it, and everyone who may act gets it."""
    out = []
    for obj in objects:
        mailed = set(db.scalars(recipients(obj)).all())
        for user in users:
            if (user in mailed) != rule(user, obj):
                out.append(f"{user!r} {'is' if user in mailed else 'is not'} mailed about {obj!r}")
    return out
