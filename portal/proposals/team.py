"""A proposal's team: invitations by e-mail, accepting and withdrawing them, handing the PI role
on, and removing people. Services flush; the caller commits.

An invitation's link carries a random token that is only ever in the mail: the database keeps its
SHA-256, so a copy of the database opens no invitation. The link works once, until it expires,
for the logged-in person whose verified address is the invited one (``can_accept_invitation``).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import secrets
from dataclasses import dataclass

from email_validator import EmailNotValidError, validate_email
from flask import current_app
from sqlalchemy import func, select

from portal.auth.models import User
from portal.core import audit, hooks
from portal.core.errors import ConflictError, NotFoundError, ValidationError
from portal.core.models import AnySession, utcnow
from portal.core.permissions import check
from portal.notifications.rendering import check_address, external_url
from portal.proposals import emails
from portal.proposals.models import (
    Invitation,
    InvitationState,
    Proposal,
    TeamMember,
    TeamRole,
)
from portal.proposals.permissions import (
    can_invite_to_proposal,
    can_remove_team_member,
    can_transfer_pi,
)
from portal.proposals.workflow import INVITATION_WORKFLOW

#: Roles an invitation may offer: the PI role is only ever handed on (``transfer_pi``).
INVITABLE_ROLES = (TeamRole.CO_PI, TeamRole.MEMBER)


@dataclass(frozen=True)
class MemberRemoved:
    """What the follow-ups of ``proposal.remove_member`` are given (shaped like a workflow step:
    the proposal as ``obj``, the person acting as ``actor``), and the member removed."""

    obj: Proposal
    member: TeamMember
    actor: User


#: Longest token accepted from a link (``secrets.token_urlsafe(32)`` makes 43 characters).
_MAX_TOKEN = 100


def token_hash(token: str) -> str:
    """The SHA-256 (hex) under which an invitation's token is stored."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def normalised_email(raw: str) -> str:
    """``raw`` as one usable address (domain lower-cased), or ValidationError saying why not.
    Checked without DNS: the invitation itself proves the address works."""
    try:
        address = validate_email(raw.strip(), check_deliverability=False).normalized
    except EmailNotValidError as e:
        raise ValidationError(f"That is not a usable e-mail address: {e}") from None
    return check_address(address)


def invite(
    session: AnySession, proposal: Proposal, *, actor: User, email: str, role: TeamRole
) -> tuple[Invitation, str]:
    """The PI or a co-PI invites an address to the team as co-investigator or member; the address
    gets a single-use link that expires after ``INVITATION_DAYS``. An address with a pending
    invitation to this proposal, or of someone on its team, is not invited again.

    Returns the invitation and its token (the token is only in the mail and this return value).
    """
    check(can_invite_to_proposal, actor, proposal)
    if role not in INVITABLE_ROLES:
        raise ValidationError("Invite people as co-investigator or member.")
    address = normalised_email(email)
    now = utcnow()
    pending = session.scalar(
        select(Invitation.id).where(
            Invitation.proposal_id == proposal.id,
            Invitation.state == InvitationState.PENDING,
            Invitation.expires_at > now,
            func.lower(Invitation.email) == address.lower(),
        )
    )
    if pending is not None:
        raise ConflictError(
            f"{address} already has a pending invitation to this proposal. Withdraw it or send "
            "it to another address."
        )
    member = session.scalar(
        select(TeamMember.id)
        .join(User, User.id == TeamMember.user_id)
        .where(TeamMember.proposal_id == proposal.id, func.lower(User.email) == address.lower())
    )
    if member is not None:
        raise ConflictError(f"{address} belongs to someone already on the team.")
    token = secrets.token_urlsafe(32)
    invitation = Invitation(
        proposal=proposal,
        email=address,
        role=role,
        token_hash=token_hash(token),
        expires_at=now + dt.timedelta(days=int(current_app.config["INVITATION_DAYS"])),
        invited_by=actor,
    )
    session.add(invitation)
    session.flush()
    audit.record(
        session,
        "invitation.create",
        actor=actor,
        obj=invitation,
        proposal_id=proposal.id,
        email=address,
        role=role.value,
    )
    emails.invitation_sent(session, invitation, external_url("team.accept", token=token))
    return invitation, token


def invitation_for_token(session: AnySession, token: str) -> Invitation | None:
    """The invitation whose link carries ``token`` (in any state), or None."""
    if not token or len(token) > _MAX_TOKEN:
        return None
    return session.scalar(select(Invitation).where(Invitation.token_hash == token_hash(token)))


def accept(session: AnySession, invitation: Invitation, *, actor: User) -> Invitation:
    """The invited person — logged in, with the invited address verified — joins the team in the
    invitation's role, once, before it expires. Of an acceptance and a withdrawal at the same
    moment, one stands."""
    return INVITATION_WORKFLOW.run(session, invitation, "accept", actor=actor)


def revoke(session: AnySession, invitation: Invitation, *, actor: User) -> Invitation:
    """The PI or a co-PI withdraws a pending invitation; its link stops working."""
    return INVITATION_WORKFLOW.run(session, invitation, "revoke", actor=actor)


def resend(
    session: AnySession, invitation: Invitation, *, actor: User, email: str
) -> tuple[Invitation, str]:
    """Withdraw a pending invitation and invite ``email`` (another address, or the same one for a
    fresh link) in the same role. Both happen, or neither."""
    revoke(session, invitation, actor=actor)
    return invite(session, invitation.proposal, actor=actor, email=email, role=invitation.role)


def transfer_pi(
    session: AnySession, proposal: Proposal, *, actor: User, to_user_id: int
) -> TeamMember:
    """The PI hands the role to a co-investigator on the team and becomes a co-investigator."""
    check(can_transfer_pi, actor, proposal)
    members = {m.user_id: m for m in proposal.team}
    target = members.get(to_user_id)
    if target is None or target.role != TeamRole.CO_PI:
        raise ValidationError("Hand the PI role to a co-investigator on the team.")
    current = members[actor.id]
    # One PI per proposal (uq_team_members_one_pi): the old PI steps down before the new one
    # steps up, in two statements.
    current.role = TeamRole.CO_PI
    session.flush()
    target.role = TeamRole.PI
    session.flush()
    audit.record(
        session,
        "proposal.transfer_pi",
        actor=actor,
        obj=proposal,
        from_user_id=actor.id,
        to_user_id=to_user_id,
    )
    return target


def remove_member(
    session: AnySession, proposal: Proposal, *, actor: User, member_id: int
) -> TeamMember:
    """The PI removes a co-investigator or member from the team; the PI is never removed (the
    role is handed on first)."""
    check(can_remove_team_member, actor, proposal)
    member = next((m for m in proposal.team if m.id == member_id), None)
    if member is None:
        raise NotFoundError("That person is not on this proposal's team.")
    if member.role == TeamRole.PI:
        raise ValidationError(
            "The principal investigator cannot be removed; hand the role to a co-investigator "
            "first."
        )
    proposal.team.remove(member)
    session.flush()
    audit.record(
        session,
        "proposal.remove_member",
        actor=actor,
        obj=proposal,
        user_id=member.user_id,
        role=member.role.value,
    )
    hooks.run_follow_ups(session, "proposal.remove_member", MemberRemoved(proposal, member, actor))
    return member
