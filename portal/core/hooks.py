"""Gates and follow-ups: how a higher domain conditions or continues a lower domain's step without
the lower domain importing it.

A **gate** is a condition another domain puts on an action: the agreements domain closes
``institution.approve`` until the partnership agreement is signed. The workflow runner asks every
gate of ``<workflow>.<action>`` before it changes anything; a closed gate raises
:class:`GateClosedError`, whose :class:`Blocker` says what is missing, who must act next and where.
Gates can also guard actions outside a workflow (``proposal.use_compute``): the domain that takes
the action calls :func:`check_gates` itself.

A **notice** is the same blocker shown on an object's page (the institution page says which
agreement it waits for), registered per model class.

A **follow-up** runs after the action's own effects, in the same transaction: approving a proposal
issues its contribution agreement.

A **section** is a part of an object's page another domain draws: the project page shows the
project's allocations (``page_sections(obj)`` in templates).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from portal.core.errors import ValidationError
from portal.core.models import AnySession

#: A gate read outside any workflow: whether a project's awarded GPU-hours may be used (the
#: agreements domain closes it until the contribution agreement is signed; allocations read it).
USE_COMPUTE = "proposal.use_compute"


@dataclass(frozen=True)
class Blocker:
    """Why something cannot happen yet: what is missing, who must act next, and where."""

    message: str
    #: Where to go to unblock it (the agreement to sign), if anywhere.
    url: str | None = None
    link_text: str = "Open it"
    #: The link leads to a page for program staff only: others see the message without it.
    staff_only: bool = False


class GateClosedError(ValidationError):
    """A gate refused the action; ``blocker`` says why and links to what opens it."""

    def __init__(self, blocker: Blocker) -> None:
        super().__init__(blocker.message)
        self.blocker = blocker


#: ``(session, obj) -> Blocker | None``: None means the gate is open.
Gate = Callable[[AnySession, Any], Blocker | None]
#: ``(session, step)``, like a workflow effect.
FollowUp = Callable[[AnySession, Any], None]
#: ``(obj) -> Blocker | None``: shown on the object's page.
Notice = Callable[[Any], Blocker | None]

_GATES: defaultdict[str, list[Gate]] = defaultdict(list)
_FOLLOW_UPS: defaultdict[str, list[FollowUp]] = defaultdict(list)
_NOTICES: defaultdict[type, list[Notice]] = defaultdict(list)


@dataclass(frozen=True)
class Section:
    """A part of a ``model`` object's page: ``template`` drawn with ``context(obj, user)``; a
    context of None leaves the section out (nothing to show, or not the viewer's business)."""

    key: str
    template: str
    context: Callable[[Any, Any], dict[str, Any] | None]


_SECTIONS: defaultdict[type, dict[str, Section]] = defaultdict(dict)


def _add(registry: defaultdict[Any, list[Any]], key: Any, fn: Any) -> None:
    # Registering the same function again (a second app in one process) replaces it; two domains'
    # functions of the same name (``services.on_proposal_approved``) are both kept.
    name = (fn.__module__, fn.__qualname__)
    registry[key] = [f for f in registry[key] if (f.__module__, f.__qualname__) != name] + [fn]


def register_gate(key: str, gate: Gate) -> None:
    """Close ``key`` (``"institution.approve"``) whenever ``gate`` returns a blocker."""
    _add(_GATES, key, gate)


def register_follow_up(key: str, follow_up: FollowUp) -> None:
    """Run ``follow_up(session, step)`` after each successful ``key`` action."""
    _add(_FOLLOW_UPS, key, follow_up)


def register_notice(model: type, notice: Notice) -> None:
    """Show ``notice(obj)``'s blocker on the page of each ``model`` object."""
    _add(_NOTICES, model, notice)


def register_section(model: type, section: Section) -> None:
    """Draw ``section`` on the page of each ``model`` object (the same key again replaces it)."""
    _SECTIONS[model][section.key] = section


def sections_for(obj: Any, user: Any) -> list[tuple[Section, dict[str, Any]]]:
    """The sections of ``obj``'s page this ``user`` sees, each with its template context."""
    out = []
    for section in _SECTIONS.get(type(obj), {}).values():
        ctx = section.context(obj, user)
        if ctx is not None:
            out.append((section, ctx))
    return out


def blockers(session: AnySession, key: str, obj: Any) -> list[Blocker]:
    """What keeps ``key`` closed for ``obj`` now (empty: open)."""
    return [b for gate in _GATES.get(key, ()) if (b := gate(session, obj)) is not None]


def check_gates(session: AnySession, key: str, obj: Any) -> None:
    """Raise :class:`GateClosedError` with the first blocker of ``key`` for ``obj``, if any."""
    found = blockers(session, key, obj)
    if found:
        raise GateClosedError(found[0])


def run_follow_ups(session: AnySession, key: str, step: Any) -> None:
    for follow_up in _FOLLOW_UPS.get(key, ()):
        follow_up(session, step)


def notices_for(obj: Any) -> list[Blocker]:
    """The blockers to show on ``obj``'s page (the ``gate_notices`` template macro shows them)."""
    return [b for notice in _NOTICES.get(type(obj), ()) if (b := notice(obj)) is not None]
