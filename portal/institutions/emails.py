"""E-mails about applications and partnerships — received (to program officers, and to the
applicant), decided (to the applicant), an invitation to be the signing official, the partnership
started or changed (to the signing officials), a member joined — and about affiliations: a request
to the institution's signing officials, the decision back to the person, the end of an affiliation
its evidence no longer supports, and a weekly reminder while a request waits. Recipients come from
the permission rules."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import selectinload

from portal.auth.models import User
from portal.core.models import AnySession
from portal.core.workflow import Step
from portal.institutions.models import (
    Affiliation,
    AffiliationState,
    Institution,
    InstitutionState,
    OfficialInvitation,
)
from portal.institutions.permissions import (
    application_deciders,
    deciders_of_affiliation,
    signing_officials_of,
)
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

APPLICATION_RECEIVED = register_kind(
    EmailKind(
        "institutions/application_received",
        "Applications to become a partner",
        "A university applied (or sent its application again) to become a partner; program "
        "officers are asked to review it, and the applicant gets a receipt.",
    )
)
APPLICATION_DECIDED = register_kind(
    EmailKind(
        "institutions/application_decided",
        "Decision on your partnership application",
        "Program staff approved or declined your institution's application, or asked for changes.",
        mandatory=True,
    )
)
OFFICIAL_INVITED = register_kind(
    EmailKind(
        "institutions/official_invited",
        "Invitation to be a signing official",
        "An applicant proposed you as the signing official of their institution.",
        mandatory=True,
    )
)
OFFICIAL_ANSWERED = register_kind(
    EmailKind(
        "institutions/official_answered",
        "Answers to your signing-official invitations",
        "Someone you proposed as your institution's signing official accepted or declined.",
    )
)
PARTNERSHIP_STARTED = register_kind(
    EmailKind(
        "institutions/partnership_started",
        "Your institution is a partner",
        "The partnership agreement is signed by both sides: the institution is a partner.",
        mandatory=True,
    )
)
PARTNERSHIP_CHANGED = register_kind(
    EmailKind(
        "institutions/partnership_changed",
        "Your institution's partnership was suspended, reinstated or ended",
        "Program staff suspended or reinstated the partnership, or the institution was withdrawn.",
        mandatory=True,
    )
)
MEMBER_JOINED = register_kind(
    EmailKind(
        "institutions/member_joined",
        "New members of your institution",
        "Someone became a recognised member of an institution where you are signing official.",
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


def _application_context(institution: Institution) -> dict[str, Any]:
    application = institution.application
    return {
        "institution_id": institution.id,
        "institution_name": institution.name,
        "country": institution.country,
        "state": institution.state.value,
        "state_label": institution.state.label,
        "applicant_name": application.applicant.display_name
        if application is not None and application.applicant is not None
        else None,
        "note": institution.decision_note,
        "application_url": external_url("applications.detail", institution_id=institution.id),
        "queue_url": external_url("applications.queue"),
    }


def _applicant_and_officials(session: AnySession, institution: Institution) -> list[User]:
    """Who hears about an application's fate: the applicant and any signing official already."""
    people = list(session.scalars(signing_officials_of(institution)))
    application = institution.application
    if application is not None and application.applicant is not None:
        applicant = application.applicant
        if not applicant.is_disabled and applicant not in people:
            people.insert(0, applicant)
    return people


def application_received(session: AnySession, step: Step[Institution, Any] | Institution) -> None:
    """A new (or resent) application: program officers are asked to look at it; the applicant
    gets a receipt that says what happens next."""
    institution = step if isinstance(step, Institution) else step.obj
    context = _application_context(institution)
    enqueue_email(
        session,
        APPLICATION_RECEIVED.key,
        to=session.scalars(application_deciders()).all(),
        context={**context, "for_staff": True},
    )
    application = institution.application
    if application is not None and application.applicant is not None:
        enqueue_email(
            session,
            APPLICATION_RECEIVED.key,
            to=application.applicant,
            context={**context, "for_staff": False},
        )


def application_decided(session: AnySession, step: Step[Institution, Any]) -> None:
    """Changes asked for, approved (the partnership agreement follows) or declined, with the
    program's note, to the applicant and the institution's signing officials."""
    institution = step.obj
    enqueue_email(
        session,
        APPLICATION_DECIDED.key,
        to=_applicant_and_officials(session, institution),
        context={
            **_application_context(institution),
            "approved": institution.state == InstitutionState.APPROVED,
            "changes_requested": institution.state == InstitutionState.CHANGES_REQUESTED,
            "decided_by": step.actor.display_name,
        },
    )


def official_invited(
    session: AnySession, institution: Institution, email: str, token: str, invited_by: User
) -> None:
    """The invitation link (with its one-time token) to the person proposed as signing official."""
    enqueue_email(
        session,
        OFFICIAL_INVITED.key,
        to=email,
        context={
            **_application_context(institution),
            "invited_by": invited_by.display_name,
            "accept_url": external_url("applications.invitation", token=token),
        },
    )


def official_answered(session: AnySession, step: Step[OfficialInvitation, Any]) -> None:
    """Tell the applicant that the person they proposed as signing official accepted (and who
    they logged in as) or declined — a declined one needs another name on the application."""
    invitation = step.obj
    institution = invitation.institution
    application = institution.application
    applicant = application.applicant if application is not None else None
    if applicant is None or applicant.is_disabled or applicant.id == step.actor.id:
        return
    enqueue_email(
        session,
        OFFICIAL_ANSWERED.key,
        to=applicant,
        context={
            **_application_context(institution),
            "invited_email": invitation.email,
            "person_name": step.actor.display_name,
            "person_email": step.actor.email,
            "accepted": step.action == "accept",
            "edit_url": external_url("applications.edit", institution_id=institution.id),
        },
    )


def partnership_started(session: AnySession, step: Step[Institution, Any]) -> None:
    """Welcome: the institution is a partner; its signing officials (and the applicant) learn what
    its researchers can do now."""
    institution = step.obj
    enqueue_email(
        session,
        PARTNERSHIP_STARTED.key,
        to=_applicant_and_officials(session, institution),
        context={
            **_application_context(institution),
            "console_url": external_url("console.index", institution_id=institution.id),
            "directory_url": external_url("public.partners"),
        },
    )


def partnership_changed(session: AnySession, step: Step[Institution, Any]) -> None:
    """Suspended, reinstated or withdrawn, with the reason, to the institution's signing officials
    (and the applicant of an application withdrawn before it was decided)."""
    institution = step.obj
    enqueue_email(
        session,
        PARTNERSHIP_CHANGED.key,
        to=_applicant_and_officials(session, institution),
        context={
            **_application_context(institution),
            "action": step.action,
            "reason": step.reason,
            "decided_by": step.actor.display_name,
        },
    )


def member_joined(session: AnySession, step: Step[Affiliation, Any]) -> None:
    """Tell the institution's signing officials who joined — not the newcomer, nor the official
    who approved them (they know)."""
    affiliation = step.obj
    officials = [
        u
        for u in session.scalars(signing_officials_of(affiliation.institution))
        if u.id not in (affiliation.user_id, getattr(step.actor, "id", None))
    ]
    enqueue_email(
        session,
        MEMBER_JOINED.key,
        to=officials,
        context={
            "institution_name": affiliation.institution.name,
            "member_name": affiliation.user.display_name,
            "member_email": affiliation.user.email,
            "title": affiliation.title,
            "how": affiliation.source.label,
            "console_url": external_url("console.index", institution_id=affiliation.institution_id),
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
