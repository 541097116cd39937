"""E-mails about allocations, to the project's team: the GPU-hours are ready (or ready again), used
up, suspended, expired; and, from the scheduled sweep, 80 % and 100 % used and 30 and 7 days
before the end — each once per allocation."""

from __future__ import annotations

from typing import Any

from portal.allocations.models import Allocation, FollowUpRequest
from portal.allocations.permissions import deciders_of_request, holders_of, requesters_of
from portal.core.models import AnySession
from portal.core.workflow import Step
from portal.notifications.kinds import EmailKind, register_kind
from portal.notifications.rendering import external_url
from portal.notifications.services import enqueue_email

READY = register_kind(
    EmailKind(
        "allocations/ready",
        "GPU-hours ready",
        "Your project's GPU-hours can be used now (or again), with the account to run jobs under.",
        mandatory=True,
    )
)
STOPPED = register_kind(
    EmailKind(
        "allocations/stopped",
        "GPU-hours stopped",
        "Your project's allocation was used up, suspended or reached its end date.",
        mandatory=True,
    )
)
NOTICE = register_kind(
    EmailKind(
        "allocations/notice",
        "Allocation notices",
        "80 % or all of an allocation is used, or it ends in 30 or 7 days.",
    )
)


def context(allocation: Allocation, **extra: Any) -> dict[str, Any]:
    return {
        "project": allocation.proposal.title,
        "resource": allocation.resource.name,
        "hours": allocation.hours,
        "used_hours": round(allocation.used_hours, 1),
        "left_hours": round(allocation.left_hours, 1),
        "account": allocation.account,
        "cluster": allocation.cluster,
        "starts_on": allocation.starts_on.strftime("%d %B %Y"),
        "ends_on": allocation.ends_on.strftime("%d %B %Y"),
        "url": external_url("allocations.detail", allocation_id=allocation.id),
        **extra,
    }


def _team(session: AnySession, allocation: Allocation) -> list[Any]:
    return list(session.scalars(holders_of(allocation)))


def ready(session: AnySession, step: Step[Allocation, Any]) -> None:
    """The team hears the hours can be used, and under which account."""
    enqueue_email(
        session,
        READY.key,
        to=_team(session, step.obj),
        context=context(step.obj, again=step.action in ("resume", "replenish")),
    )


def stopped(session: AnySession, step: Step[Allocation, Any]) -> None:
    """The team hears why the hours stopped: used up, suspended (with the reason), ended."""
    enqueue_email(
        session,
        STOPPED.key,
        to=_team(session, step.obj),
        context=context(step.obj, why=step.action, reason=step.reason),
    )


def notice(session: AnySession, allocation: Allocation, what: str) -> None:
    """``used_80``, ``used_100``, ``ends_30`` or ``ends_7`` (the sweep sends each once)."""
    enqueue_email(
        session, NOTICE.key, to=_team(session, allocation), context=context(allocation, what=what)
    )


# --- follow-up requests ------------------------------------------------------------------------
# Whom each mail asks to decide comes from ``permissions.deciders_of_request``, the same rule
# that lets them; the project's PI and co-PIs (who may ask) hear the outcome.

REQUEST_SUBMITTED = register_kind(
    EmailKind(
        "allocations/request_submitted",
        "Allocation requests to decide",
        "A project asks for more GPU-hours, more time or a renewal on a resource you decide for.",
    )
)
REQUEST_DECIDED = register_kind(
    EmailKind(
        "allocations/request_decided",
        "Decisions on allocation requests",
        "Your project's request for more GPU-hours, more time or a renewal was decided.",
        mandatory=True,
    )
)
REQUEST_WITHDRAWN = register_kind(
    EmailKind(
        "allocations/request_withdrawn",
        "Withdrawn allocation requests",
        "A request you could decide was withdrawn by the project: nothing is left to decide.",
    )
)
REQUEST_RETURNED = register_kind(
    EmailKind(
        "allocations/request_returned",
        "GPU-hours given back",
        "Your project gave unused GPU-hours of an allocation back to the pool.",
    )
)


def request_context(request: FollowUpRequest, **extra: Any) -> dict[str, Any]:
    """What every request mail says: the allocation, what is asked, by whom, and the links."""
    return context(
        request.allocation,
        request_kind=request.kind.label,
        kind_value=request.kind.value,
        summary=request.summary,
        asked_hours=request.hours,
        asked_ends_on=request.ends_on.strftime("%d %B %Y") if request.ends_on else None,
        asked_months=request.months,
        justification=request.justification,
        requested_by=request.requested_by.display_name if request.requested_by else "",
        request_url=external_url("allocation_requests.detail", request_id=request.id),
        **extra,
    )


def _people(session: AnySession, query: Any) -> list[Any]:
    return list(session.scalars(query))


def request_submitted(session: AnySession, request: FollowUpRequest) -> None:
    """Whoever may decide the request is asked to (not the one who asked)."""
    enqueue_email(
        session,
        REQUEST_SUBMITTED.key,
        to=_people(session, deciders_of_request(request)),
        context=request_context(request),
    )


def request_decided(session: AnySession, step: Step[FollowUpRequest, Any]) -> None:
    """The project's PI and co-PIs hear the decision, with the note or reason."""
    request = step.obj
    enqueue_email(
        session,
        REQUEST_DECIDED.key,
        to=_people(session, requesters_of(request.allocation)),
        context=request_context(
            request,
            decision=step.action,
            note=step.reason,
            decided_by=getattr(step.actor, "display_name", ""),
            renewal_url=(
                external_url("allocations.detail", allocation_id=request.renewal_id)
                if request.renewal_id
                else None
            ),
        ),
    )


def request_withdrawn(session: AnySession, step: Step[FollowUpRequest, Any]) -> None:
    """Whoever was asked to decide hears there is nothing left to decide."""
    request = step.obj
    enqueue_email(
        session,
        REQUEST_WITHDRAWN.key,
        to=_people(session, deciders_of_request(request)),
        context=request_context(request, withdrawn_by=getattr(step.actor, "display_name", "")),
    )


def hours_returned(session: AnySession, step: Step[FollowUpRequest, Any]) -> None:
    """The project's PI and co-PIs hear that hours were given back (one of them did it)."""
    request = step.obj
    enqueue_email(
        session,
        REQUEST_RETURNED.key,
        to=_people(session, requesters_of(request.allocation)),
        context=request_context(request, returned_by=getattr(step.actor, "display_name", "")),
    )
