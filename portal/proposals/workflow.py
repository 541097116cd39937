"""Which state may follow which for calls, proposals and team invitations, who may take each step,
and what each step tells whom.

Calls: draft → open → closed → archived (a closed call may reopen). Proposals: draft → submitted,
or → awaiting endorsement → submitted / returned (→ submitted again); withdrawn before a decision.
Invitations: pending → accepted / revoked.
"""

from __future__ import annotations

from typing import Any

from portal.core.errors import ConflictError, ValidationError
from portal.core.models import AnySession, utcnow
from portal.core.workflow import Step, Transition, Workflow
from portal.proposals import emails, permissions
from portal.proposals.checklist import missing_items, snapshot
from portal.proposals.models import (
    Call,
    CallState,
    Invitation,
    InvitationState,
    Proposal,
    ProposalVersion,
    TeamMember,
)
from portal.proposals.models import ProposalState as P

C = CallState

CALL_TRANSITIONS: dict[str, Transition[CallState]] = {
    "open": Transition(frozenset({C.DRAFT, C.CLOSED}), C.OPEN, "Open for proposals"),
    "close": Transition(frozenset({C.OPEN}), C.CLOSED, "Close", style="warning"),
    "archive": Transition(frozenset({C.CLOSED}), C.ARCHIVED, "Archive", style="secondary"),
}


def _call_is_ready(step: Step[Call, CallState]) -> None:
    call = step.obj
    if not call.resources:
        raise ValidationError("Offer at least one resource with a budget before opening the call.")
    if not call.criteria:
        raise ValidationError("Give the call a review rubric before opening it.")
    if call.closes_at is not None and call.closes_at <= utcnow():
        raise ValidationError("The closing date has passed; move it (or make the call rolling).")


CALL_WORKFLOW: Workflow[Call, CallState] = Workflow(
    name="call",
    noun="call",
    model=Call,
    transitions=CALL_TRANSITIONS,
    permissions={action: permissions.can_run_call for action in CALL_TRANSITIONS},
    mails={},
    # Calls are public pages, announced by the program itself; nobody is asked to act.
    silent=frozenset(CALL_TRANSITIONS),
    checks={"open": _call_is_ready},
)


PROPOSAL_TRANSITIONS: dict[str, Transition[P]] = {
    "submit": Transition(frozenset({P.DRAFT, P.RETURNED, P.REVISE}), P.SUBMITTED, "Submit"),
    "submit_for_endorsement": Transition(
        frozenset({P.DRAFT, P.RETURNED, P.REVISE}), P.AWAITING_ENDORSEMENT, "Submit for endorsement"
    ),
    "endorse": Transition(frozenset({P.AWAITING_ENDORSEMENT}), P.SUBMITTED, "Endorse"),
    "return": Transition(
        frozenset({P.AWAITING_ENDORSEMENT}),
        P.RETURNED,
        "Return to the team",
        needs_reason=True,
        style="warning",
    ),
    # Not from draft: a proposal never submitted has no submitted_at, which every state but
    # draft requires (CHECK submitted_when_submitted); a draft is simply left unsubmitted.
    "withdraw": Transition(
        frozenset(
            {P.DRAFT, P.AWAITING_ENDORSEMENT, P.RETURNED, P.SUBMITTED, P.IN_REVIEW, P.REVISE}
        ),
        P.WITHDRAWN,
        "Withdraw",
        style="danger",
    ),
    # Review and decision (portal/reviews assigns reviewers; program staff or the call's
    # allocation committee decide).
    "start_review": Transition(frozenset({P.SUBMITTED}), P.IN_REVIEW, "Start review"),
    "approve": Transition(frozenset({P.IN_REVIEW}), P.ACTIVE, "Approve", style="success"),
    "revise": Transition(
        frozenset({P.IN_REVIEW}), P.REVISE, "Ask for a revision", needs_reason=True, style="warning"
    ),
    "decline": Transition(
        frozenset({P.IN_REVIEW}), P.DECLINED, "Decline", needs_reason=True, style="danger"
    ),
}


def _submittable(step: Step[Proposal, P]) -> None:
    """A proposal goes in complete, to a call that still takes it."""
    proposal = step.obj
    if not proposal.call.accepts_submissions():
        raise ConflictError("The call is closed: it takes no more submissions.")
    missing = missing_items(proposal)
    if missing:
        raise ValidationError("Not complete yet: " + "; ".join(missing) + ".")


def _freeze(session: AnySession, step: Step[Proposal, P]) -> None:
    """Keep what was submitted as a new version: reviewers see exactly that, and every earlier
    version stays viewable."""
    proposal = step.obj
    number = proposal.version + 1
    session.add(
        ProposalVersion(
            proposal_id=proposal.id,
            number=number,
            submitted_by_id=step.actor.id,
            snapshot=snapshot(proposal),
        )
    )
    proposal.version = number
    proposal.submitted_at = utcnow()
    session.flush()


def _fields(step: Step[Proposal, P]) -> dict[str, Any]:
    out: dict[str, Any] = {"state_changed_at": utcnow()}
    if step.action in ("submit", "submit_for_endorsement"):
        # Written with the state: the CHECK ``submitted_when_submitted`` holds at the UPDATE.
        out["submitted_at"] = utcnow()
    if step.action in ("endorse", "return"):
        out.update(endorsed_by_id=step.actor.id, endorsed_at=utcnow(), decision_note=step.reason)
    if step.action in ("approve", "revise", "decline"):
        out.update(decided_by_id=step.actor.id, decided_at=utcnow(), decision_reason=step.reason)
    return out


PROPOSAL_WORKFLOW: Workflow[Proposal, P] = Workflow(
    name="proposal",
    noun="proposal",
    model=Proposal,
    transitions=PROPOSAL_TRANSITIONS,
    permissions={
        "submit": permissions.can_submit_proposal,
        "submit_for_endorsement": permissions.can_submit_proposal,
        "endorse": permissions.can_endorse_proposal,
        "return": permissions.can_endorse_proposal,
        "withdraw": permissions.can_withdraw_proposal,
        "start_review": permissions.can_run_review,
        "approve": permissions.can_decide_proposal,
        "revise": permissions.can_decide_proposal,
        "decline": permissions.can_decide_proposal,
    },
    mails={
        "submit": emails.proposal_submitted,
        "submit_for_endorsement": emails.endorsement_needed,
        "endorse": emails.proposal_submitted,
        "return": emails.proposal_returned,
        "withdraw": emails.proposal_withdrawn,
        "approve": emails.proposal_decided,
        "revise": emails.proposal_decided,
        "decline": emails.proposal_decided,
    },
    # The team sees "in review" on the proposal's page; the reviewers hear of their assignments.
    silent=frozenset({"start_review"}),
    fields=_fields,
    checks={"submit": _submittable, "submit_for_endorsement": _submittable},
    effects={"submit": _freeze, "submit_for_endorsement": _freeze},
)


INVITATION_TRANSITIONS: dict[str, Transition[InvitationState]] = {
    "accept": Transition(
        frozenset({InvitationState.PENDING}), InvitationState.ACCEPTED, "Accept the invitation"
    ),
    "revoke": Transition(
        frozenset({InvitationState.PENDING}),
        InvitationState.REVOKED,
        "Withdraw the invitation",
        style="secondary",
    ),
}


def _not_expired(step: Step[Invitation, InvitationState]) -> None:
    if step.obj.expires_at <= utcnow():
        raise ConflictError("This invitation has expired. Ask for a new one.")


def _join_team(session: AnySession, step: Step[Invitation, InvitationState]) -> None:
    session.add(
        TeamMember(proposal_id=step.obj.proposal_id, user_id=step.actor.id, role=step.obj.role)
    )
    session.flush()
    session.expire(step.obj.proposal, ["team"])


INVITATION_WORKFLOW: Workflow[Invitation, InvitationState] = Workflow(
    name="invitation",
    noun="invitation",
    model=Invitation,
    transitions=INVITATION_TRANSITIONS,
    permissions={
        "accept": permissions.can_accept_invitation,
        "revoke": permissions.can_revoke_invitation,
    },
    mails={},
    # The person accepting or the inviter withdrawing is the one acting; the team sees the change.
    silent=frozenset(INVITATION_TRANSITIONS),
    fields=lambda step: {
        "decided_at": utcnow(),
        "accepted_by_id": step.actor.id if step.action == "accept" else None,
    },
    checks={"accept": _not_expired},
    effects={"accept": _join_team},
)
