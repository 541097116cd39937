"""E-mails about affiliations: a request to the institution's signing officials, the decision back
to the person, the end of an affiliation its evidence no longer supports, and a weekly reminder
while a request waits. Recipient rules live here."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from portal.core.models import AnySession
from portal.core.workflow import Step
from portal.institutions.models import Affiliation, AffiliationState
from portal.institutions.permissions import deciders_of_affiliation
from portal.notifications.kinds import EmailKind, register_kind
from portal.notifications.reminders import Period, ReminderRule, register_rule
from portal.notifications.rendering import external_url
from portal.notifications.services import enqueue_email

AFFILIATION_REQUESTED = register_kind(
    EmailKind(
        "institutions/affiliation_requested",
        "Affiliation requests to decide",
        "Someone asks to be recognised as a member of an institution where you are signing official.",
    )
)
AFFILIATION_DECIDED = register_kind(
    EmailKind(
        "institutions/affiliation_decided",
        "Decision on your affiliation",
        "Your institution's signing official approved or rejected your affiliation request.",
        mandatory=True,
    )
)
AFFILIATION_ENDED = register_kind(
    EmailKind(
        "institutions/affiliation_ended",
        "Your affiliation ended",
        "Your identity provider no longer vouches for your membership of an institution.",
        mandatory=True,
    )
)
AFFILIATION_PENDING = register_kind(
    EmailKind(
        "institutions/affiliation_pending",
        "Reminders about waiting affiliation requests",
        "A weekly reminder while an affiliation request at your institution waits for a decision.",
    )
)

#: A request older than this gets a weekly reminder to the signing officials.
PENDING_REMINDER_AFTER = dt.timedelta(days=3)


def _request_context(affiliation: Affiliation) -> dict[str, Any]:
    return {
        "affiliation_id": affiliation.id,
        "requester_name": affiliation.user.display_name,
        "requester_email": affiliation.user.email,
        "institution_name": affiliation.institution.name,
        "title": affiliation.title,
        "requested_on": affiliation.requested_at.strftime("%d %B %Y"),
        "decide_url": external_url("core.dashboard"),
    }


def affiliation_requested(session: AnySession, affiliation: Affiliation) -> None:
    """Ask everyone who may decide the request (``deciders_of_affiliation``): the institution's
    signing officials, or program officers where it has none."""
    enqueue_email(
        session,
        AFFILIATION_REQUESTED.key,
        to=session.scalars(deciders_of_affiliation(affiliation)).all(),
        context=_request_context(affiliation),
    )


def affiliation_decided(session: AnySession, step: Step[Affiliation, Any]) -> None:
    """Tell the person whether their affiliation was approved or rejected, with the official's note."""
    affiliation = step.obj
    enqueue_email(
        session,
        AFFILIATION_DECIDED.key,
        to=affiliation.user,
        context={
            "name": affiliation.user.display_name,
            "institution_name": affiliation.institution.name,
            "approved": affiliation.state == AffiliationState.ACTIVE,
            "note": affiliation.decision_note,
            "decided_by": step.actor.display_name,
            "dashboard_url": external_url("core.dashboard"),
        },
    )


def affiliation_ended(session: AnySession, step: Step[Affiliation, Any]) -> None:
    """Tell the person that their affiliation ended, which evidence is gone, and how to ask the
    institution's signing official instead."""
    affiliation = step.obj
    enqueue_email(
        session,
        AFFILIATION_ENDED.key,
        to=affiliation.user,
        context={
            "name": affiliation.user.display_name,
            "institution_name": affiliation.institution.name,
            "reason": step.reason,
            "request_url": external_url("affiliations.request_form"),
            "dashboard_url": external_url("core.dashboard"),
        },
    )


def _pending_requests(session: AnySession, now: dt.datetime) -> Sequence[Affiliation]:
    return session.scalars(
        select(Affiliation)
        .where(
            Affiliation.state == AffiliationState.REQUESTED,
            Affiliation.requested_at <= now - PENDING_REMINDER_AFTER,
        )
        .options(selectinload(Affiliation.user), selectinload(Affiliation.institution))
        .order_by(Affiliation.id)
    ).all()


def remind_pending_request(session: AnySession, affiliation: Affiliation) -> None:
    """Remind whoever may decide the request that it waits."""
    enqueue_email(
        session,
        AFFILIATION_PENDING.key,
        to=session.scalars(deciders_of_affiliation(affiliation)).all(),
        context=_request_context(affiliation),
    )


register_rule(
    ReminderRule(
        key="institutions.affiliation_pending",
        period=Period.WEEKLY,
        due=_pending_requests,
        send=remind_pending_request,
        description="Affiliation requests waiting more than three days, weekly to signing officials.",
    )
)
