"""E-mails about datasets: a request received (to the dataset's stewards), decided (to the
requester), access ready (with where the data is) or stopped (expired, revoked with the reason,
ended, suspended), access ending in 30 and 7 days (from the scheduled sweep), and a steward's
pre-approval asked for and decided for a proposal. The data-use agreement to sign is the
agreements engine's own mail."""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from portal.auth.models import User
from portal.core.models import AnySession
from portal.core.workflow import Step
from portal.datasets.models import AccessRequest, Grant, ProposalDataset
from portal.datasets.permissions import grantee_of, stewards_of
from portal.notifications.kinds import EmailKind, register_kind
from portal.notifications.rendering import external_url
from portal.notifications.services import enqueue_email
from portal.proposals.models import EDITORS, TeamMember

REQUEST_RECEIVED = register_kind(
    EmailKind(
        "datasets/request_received",
        "Dataset requests to decide",
        "Someone asks for access to a dataset you steward, or a project asks you to pre-approve it.",
    )
)
REQUEST_DECIDED = register_kind(
    EmailKind(
        "datasets/request_decided",
        "Dataset request decisions",
        "Your request for access to a dataset was approved, declined or returned for changes.",
        mandatory=True,
    )
)
ACCESS_READY = register_kind(
    EmailKind(
        "datasets/access_ready",
        "Dataset access ready",
        "You can use a dataset now (or again, or for longer), and where to find it.",
        mandatory=True,
    )
)
ACCESS_STOPPED = register_kind(
    EmailKind(
        "datasets/access_stopped",
        "Dataset access stopped",
        "Your access to a dataset expired, was revoked, ended or was suspended.",
        mandatory=True,
    )
)
ACCESS_EXPIRING = register_kind(
    EmailKind(
        "datasets/access_expiring",
        "Dataset access ending",
        "Your access to a dataset ends in 30 or 7 days, and how to renew it.",
    )
)
CONSENT_DECIDED = register_kind(
    EmailKind(
        "datasets/consent_decided",
        "Datasets pre-approved for a proposal",
        "A steward pre-approved (or did not) a dataset your proposal plans to use.",
    )
)


def _day(d: Any) -> str:
    return d.strftime("%d %B %Y") if d else ""


def request_context(request: AccessRequest, **extra: Any) -> dict[str, Any]:
    return {
        "dataset": request.dataset.name,
        "requester": request.user.display_name,
        "institution": request.institution.name,
        "project": request.proposal.title if request.proposal else None,
        "intended_use": request.intended_use,
        "renewal": request.is_renewal,
        "ends_on": _day(request.ends_on),
        "url": external_url("datasets.request_detail", request_id=request.id),
        **extra,
    }


def notify_request_received(session: AnySession, request: AccessRequest) -> None:
    """The dataset's stewards hear of a request (new, or sent again with changes)."""
    enqueue_email(
        session,
        REQUEST_RECEIVED.key,
        to=list(session.scalars(stewards_of(request.dataset_id, except_user_id=request.user_id))),
        context=request_context(request, again=request.decision_note is not None),
    )


def request_received(session: AnySession, step: Step[AccessRequest, Any]) -> None:
    notify_request_received(session, step.obj)


def request_decided(session: AnySession, step: Step[AccessRequest, Any]) -> None:
    """The requester hears the decision, the steward's note, and what comes next (the agreement
    to sign)."""
    enqueue_email(
        session,
        REQUEST_DECIDED.key,
        to=[step.obj.user],
        context=request_context(
            step.obj, decision=step.action, note=step.reason, decided_by=step.actor.display_name
        ),
    )


def grant_context(grant: Grant, **extra: Any) -> dict[str, Any]:
    return {
        "dataset": grant.dataset.name,
        "holder": grant.user.display_name,
        "tier": grant.dataset.tier.label,
        "starts_on": _day(grant.starts_on),
        "ends_on": _day(grant.ends_on),
        "location": grant.dataset.location,
        "url": external_url("datasets.grant_detail", grant_id=grant.id),
        "dataset_url": external_url("datasets.detail", slug=grant.dataset.slug),
        **extra,
    }


def _holder(session: AnySession, grant: Grant) -> list[User]:
    return list(session.scalars(grantee_of(grant)))


def access_ready(session: AnySession, step: Step[Grant, Any]) -> None:
    enqueue_email(
        session,
        ACCESS_READY.key,
        to=_holder(session, step.obj),
        context=grant_context(step.obj, why=step.action),
    )


def access_stopped(session: AnySession, step: Step[Grant, Any]) -> None:
    """The holder hears why: expired, revoked (with the reason), ended (why), suspended."""
    enqueue_email(
        session,
        ACCESS_STOPPED.key,
        to=_holder(session, step.obj),
        context=grant_context(
            step.obj, why=step.action, reason=step.obj.ended_reason or step.reason
        ),
    )


def access_expiring(session: AnySession, grant: Grant, days: int) -> None:
    enqueue_email(
        session,
        ACCESS_EXPIRING.key,
        to=_holder(session, grant),
        context=grant_context(grant, days=days, renewable=grant.dataset.tier.value),
    )


def link_context(link: ProposalDataset, **extra: Any) -> dict[str, Any]:
    return {
        "dataset": link.dataset.name,
        "project": link.proposal.title,
        "institution": link.proposal.institution.name,
        "purpose": link.purpose,
        "url": external_url("proposals.detail", proposal_id=link.proposal_id),
        "queue_url": external_url("datasets.consents"),
        **extra,
    }


def consent_asked(session: AnySession, link: ProposalDataset) -> None:
    """The dataset's stewards are asked to pre-approve it for a submitted proposal."""
    team = {m.user_id for m in link.proposal.team}
    enqueue_email(
        session,
        REQUEST_RECEIVED.key,
        to=[u for u in session.scalars(stewards_of(link.dataset_id)) if u.id not in team],
        context=link_context(link, consent=True),
    )


def consent_decided(session: AnySession, step: Step[ProposalDataset, Any]) -> None:
    """The proposal's PI and co-investigators hear the steward's answer."""
    editors = session.scalars(
        select(User)
        .join(TeamMember, TeamMember.user_id == User.id)
        .where(TeamMember.proposal_id == step.obj.proposal_id, TeamMember.role.in_(EDITORS))
        .order_by(User.id)
    )
    enqueue_email(
        session,
        CONSENT_DECIDED.key,
        to=list(editors),
        context=link_context(
            step.obj, decision=step.action, note=step.reason, decided_by=step.actor.display_name
        ),
    )
