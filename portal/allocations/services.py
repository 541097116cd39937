"""Allocations from awards inside the budget, activation when the gate opens, suspension with the
institution, charging usage, and the scheduled sweep. The acting user is passed in (None for the
sweep and imports: nobody); services flush, the caller commits."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Callable, Mapping, Sequence
from typing import Any, cast

from sqlalchemy import BigInteger, Table, bindparam, literal, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload

from portal.allocations import budget, emails
from portal.allocations.models import (
    SECONDS_PER_HOUR,
    Allocation,
    AllocationState,
)
from portal.allocations.workflow import ALLOCATION_WORKFLOW, usable_blocker
from portal.core import audit
from portal.core.dates import add_months
from portal.core.models import AnySession, utcnow
from portal.notifications.models import SentReminder
from portal.proposals.models import Proposal, ProposalState

S = AllocationState


def account_name(proposal: Proposal, gpu_class: str) -> str:
    """The scheduler account a project's jobs on one GPU class run under: ``atom-42-h100``."""
    return f"atom-{proposal.id}-" + re.sub(r"[^a-z0-9]+", "", gpu_class.lower())


def allocate_awards(session: AnySession, proposal: Proposal, *, actor: Any) -> list[Allocation]:
    """Turn an approved project's awards into allocations, each taken out of the call's budget on
    its resource and the resource's capacity (or nothing is allocated and the approval fails with
    the reason); those whose gate is open become active at once."""
    start = proposal.start_date or utcnow().date()
    made = []
    for award in proposal.awards:
        cr = award.call_resource
        budget.take(session, cr, award.hours)
        months = proposal.duration_months or cr.resource.period_months
        allocation = Allocation(
            award_id=award.id,
            proposal_id=proposal.id,
            call_resource_id=cr.id,
            resource_id=cr.resource_id,
            institution_id=proposal.institution_id,
            hours=award.hours,
            starts_on=start,
            ends_on=add_months(start, months),
            cluster=cr.resource.cluster,
            account=account_name(proposal, cr.resource.gpu_class),
            state=S.PENDING,
        )
        session.add(allocation)
        session.flush()
        audit.record(session, "allocation.create", actor=actor, obj=allocation, hours=award.hours)
        made.append(allocation)
    for allocation in made:
        activate_if_usable(session, allocation, actor=actor)
    return made


def activate_if_usable(session: AnySession, allocation: Allocation, *, actor: Any) -> bool:
    """Activate a pending allocation whose gate is open (else leave it pending: its page says
    why). Whether it was activated."""
    if allocation.state != S.PENDING or usable_blocker(allocation) is not None:
        return False
    ALLOCATION_WORKFLOW.run(session, allocation, "activate", actor=actor)
    return True


def _of_project(session: AnySession, proposal_id: int, *states: S) -> Sequence[Allocation]:
    return session.scalars(
        select(Allocation)
        .where(Allocation.proposal_id == proposal_id, Allocation.state.in_(states))
        .order_by(Allocation.id)
    ).all()


def _of_institution(session: AnySession, institution_id: int, *states: S) -> Sequence[Allocation]:
    return session.scalars(
        select(Allocation)
        .where(Allocation.institution_id == institution_id, Allocation.state.in_(states))
        .order_by(Allocation.id)
    ).all()


# --- follow-ups of other domains' steps (registered in __init__.py) ----------------------------


def on_proposal_approved(session: AnySession, step: Any) -> None:
    """``proposal.approve``: the awards become allocations."""
    if step.obj.state == ProposalState.ACTIVE:
        allocate_awards(session, step.obj, actor=step.actor)


def on_agreement_signed(session: AnySession, step: Any) -> None:
    """``agreement.complete``: a project's fully signed contribution agreement opens its gate."""
    proposal_id = getattr(step.obj, "proposal_id", None)
    if proposal_id is not None:
        for allocation in _of_project(session, proposal_id, S.PENDING):
            activate_if_usable(session, allocation, actor=step.actor)


def on_institution_stopped(session: AnySession, step: Any) -> None:
    """``institution.suspend`` and ``institution.withdraw``: its projects' active allocations stop,
    with the same reason. (Pending ones need a partner to start at all: they simply stay pending.)"""
    for allocation in _of_institution(session, step.obj.id, S.ACTIVE):
        ALLOCATION_WORKFLOW.run(
            session,
            allocation,
            "suspend",
            actor=step.actor,
            reason=f"{step.obj.name} was {step.transition.to.label.lower()}: {step.reason}",
            values={"suspended_with_institution": True},
        )


def on_institution_reinstated(session: AnySession, step: Any) -> None:
    """``institution.reinstate``: the allocations suspended with it resume where their gate is
    open, within their period and hours (the others stay suspended; the sweep expires them at their
    end); pending ones whose agreement was signed meanwhile start. Allocations program staff
    suspended for a reason of their own stay suspended."""
    today = utcnow().date()
    for allocation in _of_institution(session, step.obj.id, S.SUSPENDED):
        if (
            allocation.suspended_with_institution
            and allocation.ends_on >= today
            and allocation.used_gpu_seconds < allocation.hours * SECONDS_PER_HOUR
            and usable_blocker(allocation) is None
        ):
            ALLOCATION_WORKFLOW.run(
                session,
                allocation,
                "resume",
                actor=step.actor,
                values={"suspended_with_institution": False},
            )
    for allocation in _of_institution(session, step.obj.id, S.PENDING):
        activate_if_usable(session, allocation, actor=step.actor)


# --- usage ---------------------------------------------------------------------------------------


def charge(session: AnySession, allocation: Allocation, gpu_seconds: int) -> None:
    """Add ``gpu_seconds`` (negative: a job re-reported shorter) to the allocation's usage in one
    UPDATE (imports and pushes may run at once); an active allocation whose usage reaches its
    hours is used up."""
    if gpu_seconds == 0:
        return
    charge_many(session, {allocation.id: gpu_seconds})
    session.refresh(allocation, ["used_gpu_seconds", "state"])


def charge_many(session: AnySession, gpu_seconds: Mapping[int, int]) -> list[Allocation]:
    """Add GPU-seconds to several allocations' usage (allocation id → GPU-seconds, negative: jobs
    re-reported shorter), each a relative UPDATE (imports and pushes may run at once), in one
    statement; the active ones whose usage reaches their hours are used up. The allocations
    used up, in id order."""
    charged = sorted((i, seconds) for i, seconds in gpu_seconds.items() if seconds)
    if not charged:
        return []
    table = cast(Table, Allocation.__table__)
    session.execute(
        update(table)
        .where(table.c.id == bindparam("charged_id"))
        .values(used_gpu_seconds=table.c.used_gpu_seconds + bindparam("gpu_seconds")),
        [{"charged_id": i, "gpu_seconds": seconds} for i, seconds in charged],
    )
    ids = [i for i, _ in charged]
    used_up = session.scalars(
        select(Allocation)
        .where(
            Allocation.id.in_(ids),
            Allocation.state == S.ACTIVE,
            Allocation.used_gpu_seconds >= Allocation.hours * literal(SECONDS_PER_HOUR, BigInteger),
        )
        .order_by(Allocation.id)
        # what their mail says (emails.context), for all of them at once
        .options(selectinload(Allocation.proposal), selectinload(Allocation.resource))
        .execution_options(populate_existing=True)
    ).all()
    for allocation in used_up:
        ALLOCATION_WORKFLOW.run(session, allocation, "exhaust", actor=None)
    # The ones this session holds have their usage read again when next used.
    mapper = Allocation.__mapper__
    for i in ids:
        held = session.identity_map.get(mapper.identity_key_from_primary_key((i,)))
        if held is not None:
            session.expire(held, ["used_gpu_seconds", "updated_at"])
    return list(used_up)


# --- the scheduled sweep -------------------------------------------------------------------------

#: The notices the sweep sends, once per allocation each: (key, whether it is due now).
NOTICES: tuple[tuple[str, Callable[[Allocation, dt.date], bool]], ...] = (
    ("used_100", lambda a, today: a.used_fraction >= 1.0),
    ("used_80", lambda a, today: 0.8 <= a.used_fraction < 1.0),
    ("ends_7", lambda a, today: 0 <= (a.ends_on - today).days <= 7),
    ("ends_30", lambda a, today: 7 < (a.ends_on - today).days <= 30),
)
#: ``reminders_sent.period`` for a notice sent once in an allocation's life.
ONCE = "once"


def _notify_once(session: AnySession, allocation: Allocation, what: str) -> bool:
    """Send notice ``what`` unless it was sent before (the unique row in ``reminders_sent`` makes
    two sweeps at once send it once)."""
    try:
        with session.begin_nested():
            session.add(
                SentReminder(rule=f"allocations.{what}", object_id=allocation.id, period=ONCE)
            )
            session.flush()
            emails.notice(session, allocation, what)
    except IntegrityError:
        return False
    return True


def sweep(session: AnySession) -> dict[str, int]:
    """Expire allocations past their end date; send the 80 %/100 % used and 30/7 days before the
    end notices, each once. Idempotent: run it from cron as often as you like."""
    today = utcnow().date()
    counts = {"expired": 0, **{what: 0 for what, _ in NOTICES}}
    for allocation in session.scalars(
        select(Allocation)
        .where(Allocation.state != S.EXPIRED, Allocation.ends_on < today)
        .order_by(Allocation.id)
    ).all():
        ALLOCATION_WORKFLOW.run(session, allocation, "expire", actor=None)
        counts["expired"] += 1
    sent = {
        (r.rule, r.object_id)
        for r in session.scalars(select(SentReminder).where(SentReminder.period == ONCE))
    }
    for allocation in session.scalars(
        select(Allocation)
        .where(Allocation.state.in_((S.ACTIVE, S.EXHAUSTED)))
        .order_by(Allocation.id)
    ).all():
        for what, due in NOTICES:
            if (f"allocations.{what}", allocation.id) in sent or not due(allocation, today):
                continue
            if _notify_once(session, allocation, what):
                counts[what] += 1
    if any(counts.values()):
        audit.record(session, "allocations.sweep", actor=None, **counts)
    return counts
