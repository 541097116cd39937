"""Checks every domain's workflow tests use: the declaration is consistent, and one (state, action)
pair behaves as the domain's expected table says — through the shared runner, with its audit event.
"""

from __future__ import annotations

import enum
import itertools
from collections.abc import Callable, Mapping
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.core.audit import AuditEvent
from portal.core.errors import InvalidTransitionError
from portal.core.workflow import Workflow


def assert_declared(workflow: Workflow[Any, Any]) -> None:
    """The table, the permission rules and the mail/silent sets name the same actions, and every
    rule states who it allows (a docstring) and what it tells those it refuses."""
    assert workflow.inconsistencies() == []
    assert set(workflow.permissions) == set(workflow.transitions)
    assert set(workflow.mails) | set(workflow.silent) == set(workflow.transitions)
    for action, rule in workflow.permissions.items():
        assert (rule.__doc__ or "").strip(), f"{action}: the rule {rule!r} has no docstring"
        assert rule.refusal, f"{action}: the rule {rule!r} has no refusal message"


def every_pair(states: type[enum.Enum], workflow: Workflow[Any, Any]) -> list[Any]:
    """``pytest.mark.parametrize(("state", "action"), every_pair(...))``: each state with each action."""
    return [
        pytest.param(s, a, id=f"{s.value}-{a}")
        for s, a in itertools.product(states, workflow.transitions)
    ]


def assert_step(
    db: Session,
    workflow: Workflow[Any, Any],
    obj: Any,
    action: str,
    expected: Mapping[tuple[Any, str], Any],
    take: Callable[[], object],
) -> None:
    """Take ``action`` on ``obj`` (in ``obj``'s present state) with ``take``; if ``expected`` has
    the pair, the object moved to its state with one audit event saying from where to where;
    otherwise it was refused as an invalid transition and nothing changed."""
    state = obj.state
    if (state, action) in expected:
        take()
        assert obj.state == expected[(state, action)]
        (event,) = db.scalars(
            select(AuditEvent).where(
                AuditEvent.object_type == obj.__tablename__,
                AuditEvent.object_id == obj.id,
                AuditEvent.action == f"{workflow.name}.{action}",
            )
        ).all()
        assert event.details["frm"] == state.value and event.details["to"] == obj.state.value
    else:
        with pytest.raises(InvalidTransitionError):
            take()
        db.expire(obj, ["state"])
        assert obj.state == state
