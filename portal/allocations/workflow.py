"""Which state may follow which for allocations, who (or what) takes each step, and what each step
tells the project's team.

pending (waiting on the gate: the contribution agreement fully signed, the institution a partner)
→ active → exhausted (usage reached its hours) / expired (its end date passed) / suspended (its
institution was suspended) → active again (resumed) or expired. A used-up allocation is active
again (replenished) when an approved supplement raises its hours above its usage.
"""

from __future__ import annotations

from sqlalchemy.orm import object_session

from portal.allocations import budget, emails, permissions
from portal.allocations.models import Allocation
from portal.allocations.models import AllocationState as S
from portal.core import hooks
from portal.core.errors import ConflictError
from portal.core.models import AnySession, utcnow
from portal.core.workflow import Step, Transition, Workflow
from portal.institutions.models import InstitutionState

TRANSITIONS: dict[str, Transition[S]] = {
    "activate": Transition(frozenset({S.PENDING}), S.ACTIVE, "Activate"),
    "exhaust": Transition(frozenset({S.ACTIVE}), S.EXHAUSTED, "Used up"),
    "suspend": Transition(
        frozenset({S.PENDING, S.ACTIVE}), S.SUSPENDED, "Suspend", needs_reason=True, style="warning"
    ),
    "resume": Transition(frozenset({S.SUSPENDED}), S.ACTIVE, "Resume"),
    # A supplement raised its hours above its usage (portal/allocations/followups.py).
    "replenish": Transition(frozenset({S.EXHAUSTED}), S.ACTIVE, "Active again"),
    "expire": Transition(
        frozenset({S.PENDING, S.ACTIVE, S.EXHAUSTED, S.SUSPENDED}), S.EXPIRED, "Expire"
    ),
}


def usable_blocker(allocation: Allocation) -> hooks.Blocker | None:
    """Why ``allocation``'s hours cannot be used now (None: they can): its institution must be a
    partner in good standing and its project's contribution agreement fully signed."""
    session = object_session(allocation)
    assert session is not None
    institution = allocation.institution
    if institution.state != InstitutionState.PARTNER:
        return hooks.Blocker(
            f"{institution.name} is {institution.state.label.lower()}, not a partner in good "
            "standing: its projects' GPU-hours cannot be used until program staff reinstate it."
        )
    found = hooks.blockers(session, hooks.USE_COMPUTE, allocation.proposal)
    return found[0] if found else None


def _usable(step: Step[Allocation, S]) -> None:
    blocker = usable_blocker(step.obj)
    if blocker is not None:
        raise hooks.GateClosedError(blocker)


def _within_period(step: Step[Allocation, S]) -> None:
    a = step.obj
    if a.ends_on < utcnow().date():
        raise ConflictError("This allocation's period has ended: it expires instead.")
    if a.used_gpu_seconds >= a.hours * 3600:
        raise ConflictError("This allocation is used up.")


def _resume_checks(step: Step[Allocation, S]) -> None:
    _within_period(step)
    _usable(step)


def _give_back_capacity(session: AnySession, step: Step[Allocation, S]) -> None:
    """An expired allocation holds no capacity on its resource any more (its period is over)."""
    session.refresh(step.obj, ["hours"])  # a supplement or return may have committed since
    budget.give_back(session, step.obj.call_resource, step.obj.hours, to_call=False)


ALLOCATION_WORKFLOW: Workflow[Allocation, S] = Workflow(
    name="allocation",
    noun="allocation",
    model=Allocation,
    transitions=TRANSITIONS,
    permissions={
        "activate": permissions.can_activate,
        "exhaust": permissions.can_exhaust,
        "suspend": permissions.can_suspend,
        "resume": permissions.can_suspend,
        "replenish": permissions.can_replenish,
        "expire": permissions.can_expire,
    },
    mails={
        "activate": emails.ready,
        "resume": emails.ready,
        "replenish": emails.ready,
        "exhaust": emails.stopped,
        "suspend": emails.stopped,
        "expire": emails.stopped,
    },
    silent=frozenset(),
    fields=lambda step: {"state_changed_at": utcnow()},
    checks={"activate": _usable, "resume": _resume_checks, "replenish": _resume_checks},
    effects={"expire": _give_back_capacity},
)
