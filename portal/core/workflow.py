"""Workflows as data: each domain declares which action moves an object from which states to which."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Generic, TypeVar

from portal.core.errors import InvalidTransitionError

S = TypeVar("S", bound=enum.Enum)


@dataclass(frozen=True)
class Transition(Generic[S]):
    """An action allowed from any state in ``frm``, leading to ``to``."""

    frm: frozenset[S]
    to: S
    #: Button text for the action.
    label: str
    #: Whether the person acting must give a reason (kept in the audit log and told to others).
    needs_reason: bool = False
    #: Bootstrap colour of the button: primary, danger, secondary …
    style: str = "primary"


def check_transition(table: Mapping[str, Transition[S]], action: str, state: S) -> Transition[S]:
    """The transition for ``action`` if it may follow ``state``; otherwise InvalidTransitionError."""
    try:
        tr = table[action]
    except KeyError:
        raise InvalidTransitionError(f"Unknown action {action!r}.") from None
    if state not in tr.frm:
        raise InvalidTransitionError(
            f"{tr.label} is not possible while the state is {getattr(state, 'label', state)}."
        )
    return tr


def available_actions(table: Mapping[str, Transition[S]], state: S) -> list[str]:
    """The actions that may follow ``state``, in table order."""
    return [name for name, tr in table.items() if state in tr.frm]
