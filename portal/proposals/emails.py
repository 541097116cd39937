"""E-mails about proposals: submitted (to the team), endorsement needed (to the institution's
signing officials), endorsed or returned (to the team), withdrawn (to the team and, if it waited
for them, the officials), and team invitations (to the invited address)."""

from __future__ import annotations

from typing import Any

from portal.core.models import AnySession
from portal.core.workflow import Step
from portal.notifications.kinds import EmailKind, register_kind
from portal.notifications.rendering import external_url
from portal.notifications.services import enqueue_email
from portal.proposals.models import Invitation, Proposal, ProposalState
from portal.proposals.permissions import endorsers_of_proposal, team_of_proposal

SUBMITTED = register_kind(
    EmailKind(
        "proposals/submitted",
        "Your proposal was submitted",
        "A proposal you are on was submitted (or endorsed and passed on to review).",
        mandatory=True,
    )
)
ENDORSEMENT_NEEDED = register_kind(
    EmailKind(
        "proposals/endorsement_needed",
        "Proposals awaiting your endorsement",
        "A proposal from your institution needs your endorsement before review.",
        mandatory=True,
    )
)
RETURNED = register_kind(
    EmailKind(
        "proposals/returned",
        "Your proposal was returned",
        "Your institution's signing official returned a proposal you are on, with a reason.",
        mandatory=True,
    )
)
WITHDRAWN = register_kind(
    EmailKind(
        "proposals/withdrawn",
        "A proposal was withdrawn",
        "The principal investigator withdrew a proposal you are on or were asked to endorse.",
    )
)
INVITATION = register_kind(
    EmailKind(
        "proposals/invitation",
        "Invitations to a proposal's team",
        "Someone invites you to join a research proposal.",
        mandatory=True,
    )
)


def _context(proposal: Proposal, **extra: Any) -> dict[str, Any]:
    return {
        "proposal_id": proposal.id,
        "title": proposal.title,
        "call_title": proposal.call.title,
        "institution_name": proposal.institution.name,
        "pi_name": proposal.pi.display_name if proposal.pi else None,
        "state": proposal.state.label,
        "url": external_url("proposals.detail", proposal_id=proposal.id),
        **extra,
    }


def _team(session: AnySession, proposal: Proposal) -> Any:
    return session.scalars(team_of_proposal(proposal)).all()


def proposal_submitted(session: AnySession, step: Step[Proposal, Any]) -> None:
    """The team hears that the proposal is submitted (endorsed, where that was needed)."""
    enqueue_email(
        session,
        SUBMITTED.key,
        to=_team(session, step.obj),
        context=_context(step.obj, version=step.obj.version, by=step.actor.display_name),
    )


def endorsement_needed(session: AnySession, step: Step[Proposal, Any]) -> None:
    """The signing officials who may endorse it are asked to; the team hears it went to them."""
    proposal = step.obj
    enqueue_email(
        session,
        ENDORSEMENT_NEEDED.key,
        to=session.scalars(endorsers_of_proposal(proposal)).all(),
        context=_context(proposal, queue_url=external_url("proposals.endorsements")),
    )
    enqueue_email(
        session,
        SUBMITTED.key,
        to=_team(session, proposal),
        context=_context(proposal, version=proposal.version, by=step.actor.display_name),
    )


def proposal_returned(session: AnySession, step: Step[Proposal, Any]) -> None:
    enqueue_email(
        session,
        RETURNED.key,
        to=_team(session, step.obj),
        context=_context(step.obj, reason=step.reason, by=step.actor.display_name),
    )


def proposal_withdrawn(session: AnySession, step: Step[Proposal, Any]) -> None:
    proposal = step.obj
    to = list(_team(session, proposal))
    if step.frm == ProposalState.AWAITING_ENDORSEMENT:
        to += list(session.scalars(endorsers_of_proposal(proposal)).all())
    enqueue_email(session, WITHDRAWN.key, to=to, context=_context(proposal, reason=step.reason))


DECIDED = register_kind(
    EmailKind(
        "proposals/decided",
        "Decisions on your proposals",
        "Your proposal was approved (with the GPU-hours awarded), sent back for revision, or declined.",
        mandatory=True,
    )
)


def proposal_decided(session: AnySession, step: Step[Proposal, Any]) -> None:
    """The team hears the decision, the reason and any GPU-hours awarded — never who reviewed."""
    proposal = step.obj
    awards = [
        {"resource": a.call_resource.resource.name, "hours": a.hours} for a in proposal.awards
    ]
    enqueue_email(
        session,
        DECIDED.key,
        to=_team(session, proposal),
        context=_context(proposal, decision=step.action, reason=step.reason, awards=awards),
    )


def invitation_sent(session: AnySession, invitation: Invitation, link: str) -> None:
    """The invited address gets the single-use link (it is in this mail only)."""
    proposal = invitation.proposal
    enqueue_email(
        session,
        INVITATION.key,
        to=invitation.email,
        context=_context(
            proposal,
            role=invitation.role.label,
            # Not ``link``: the renderer gives every template ``link(endpoint, ...)``, which
            # would hide a context value of that name.
            accept_url=link,
            invited_by=invitation.invited_by.display_name if invitation.invited_by else None,
            expires_on=invitation.expires_at.strftime("%d %B %Y"),
        ),
    )
