"""Who may see and change resources, calls, proposals, their teams, invitations and attachments.

Each ``can_*`` rule says who in its docstring; ``visible_*`` are the same rules as list filters and
``*_of_*`` the same rules as the recipients of a mail that asks someone to act.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, and_, false, or_, select
from sqlalchemy.orm import object_session
from sqlalchemy.sql.elements import ColumnElement

from portal.auth.models import Role, RoleGrant, User
from portal.auth.permissions import as_user, is_staff
from portal.core.memo import per_request
from portal.core.permissions import rule
from portal.institutions.models import AffiliationState, Institution, InstitutionState
from portal.proposals.models import (
    EDITORS,
    Call,
    CallState,
    CommitteeMember,
    Invitation,
    Proposal,
    ProposalState,
    TeamMember,
    TeamRole,
)

#: What officials of the proposal's institution see: everything but a draft nobody submitted yet.
_SUBMITTED_ONCE = (
    ProposalState.AWAITING_ENDORSEMENT,
    ProposalState.RETURNED,
    ProposalState.SUBMITTED,
    ProposalState.WITHDRAWN,
)


# --- resources and calls -----------------------------------------------------------------------


@rule("Only program staff manage resources and calls.")
def can_manage_calls(user: Any) -> bool:
    """Program staff (program officers and administrators)."""
    return is_staff(user)


def visible_calls(user: Any) -> Select[Call]:
    """``can_view_call`` as a list filter."""
    q = select(Call)
    return q if is_staff(user) else q.where(Call.state != CallState.DRAFT)


@rule("This call is not published.")
def can_view_call(user: Any, call: Call) -> bool:
    """Published calls to everyone, anonymous visitors included; drafts to program staff."""
    return call.state != CallState.DRAFT or is_staff(user)


@rule("Only program staff open, close and archive calls.")
def can_run_call(user: Any, call: Call) -> bool:
    """Program staff."""
    return is_staff(user)


@per_request
def on_a_team(user: Any) -> bool:
    """Whether ``user`` is on any project's team (dashboard cards about one's projects ask this
    first: most staff and reviewers are on none)."""
    u = as_user(user)
    session = object_session(u) if u is not None else None
    if u is None or session is None:
        return False
    return (
        session.scalar(select(TeamMember.id).where(TeamMember.user_id == u.id).limit(1)) is not None
    )


def partner_institutions_of(user: Any) -> list[Institution]:
    """The partner institutions where ``user`` is an active member (where they may propose)."""
    u = as_user(user)
    if u is None:
        return []
    return [
        a.institution
        for a in u.affiliations
        if a.state == AffiliationState.ACTIVE and a.institution.state == InstitutionState.PARTNER
    ]


@rule("Only members of a partner institution propose projects, while the call is open.")
def can_propose(user: Any, call: Call) -> bool:
    """Researchers with an active affiliation at a partner institution, to an open call."""
    return call.accepts_submissions() and bool(partner_institutions_of(user))


# --- proposals ---------------------------------------------------------------------------------


def _role_of(user: Any, proposal: Proposal) -> TeamRole | None:
    u = as_user(user)
    if u is None:
        return None
    return next((m.role for m in proposal.team if m.user_id == u.id), None)


def _official_of(user: Any, proposal: Proposal) -> bool:
    u = as_user(user)
    return u is not None and proposal.institution_id in u.institution_ids_for(Role.SIGNING_OFFICIAL)


@rule("You cannot see this proposal.")
def can_view_proposal(user: Any, proposal: Proposal) -> bool:
    """Its team; program staff; and, once submitted, the signing officials of its institution."""
    if _role_of(user, proposal) is not None or is_staff(user):
        return True
    return proposal.state in _SUBMITTED_ONCE and _official_of(user, proposal)


def visible_proposals(user: Any) -> Select[Proposal]:
    """``can_view_proposal`` as a list filter."""
    q = select(Proposal)
    u = as_user(user)
    if u is None:
        return q.where(false())
    if is_staff(u):
        return q
    mine = select(TeamMember.proposal_id).where(TeamMember.user_id == u.id)
    official_of = u.institution_ids_for(Role.SIGNING_OFFICIAL)
    return q.where(
        or_(
            Proposal.id.in_(mine),
            and_(Proposal.institution_id.in_(official_of), Proposal.state.in_(_SUBMITTED_ONCE))
            if official_of
            else false(),
        )
    )


@rule("Only the principal investigator and co-investigators edit a proposal, while it is a draft.")
def can_edit_proposal(user: Any, proposal: Proposal) -> bool:
    """The PI and co-PIs, while the proposal is a draft or returned to them."""
    return proposal.is_editable and _role_of(user, proposal) in EDITORS


@rule("Only the principal investigator submits or withdraws the proposal.")
def can_submit_proposal(user: Any, proposal: Proposal) -> bool:
    """The PI."""
    return _role_of(user, proposal) == TeamRole.PI


@rule("Only the principal investigator withdraws the proposal.")
def can_withdraw_proposal(user: Any, proposal: Proposal) -> bool:
    """The PI."""
    return _role_of(user, proposal) == TeamRole.PI


@rule("Only a signing official of the proposal's institution endorses it.")
def can_endorse_proposal(user: Any, proposal: Proposal) -> bool:
    """The signing officials of the proposal's institution who are not on its team."""
    return _official_of(user, proposal) and _role_of(user, proposal) is None


def _endorser(user_id: Any, proposal: Proposal) -> ColumnElement[bool]:
    on_team = select(TeamMember.user_id).where(TeamMember.proposal_id == proposal.id)
    officials = select(RoleGrant.user_id).where(
        RoleGrant.role == Role.SIGNING_OFFICIAL, RoleGrant.institution_id == proposal.institution_id
    )
    return and_(user_id.in_(officials), user_id.not_in(on_team))


def endorsers_of_proposal(proposal: Proposal) -> Select[User]:
    """The people ``can_endorse_proposal`` lets endorse ``proposal``: whom its mail asks."""
    return (
        select(User)
        .where(User.is_disabled.is_(False), _endorser(User.id, proposal))
        .order_by(User.id)
    )


def awaiting_endorsement(user: Any) -> Select[Proposal]:
    """Proposals waiting for ``user``'s endorsement (``can_endorse_proposal`` as a list filter)."""
    u = as_user(user)
    official_of = u.institution_ids_for(Role.SIGNING_OFFICIAL) if u is not None else set()
    if u is None or not official_of:
        return select(Proposal).where(false())
    mine = select(TeamMember.proposal_id).where(TeamMember.user_id == u.id)
    return select(Proposal).where(
        Proposal.state == ProposalState.AWAITING_ENDORSEMENT,
        Proposal.institution_id.in_(official_of),
        Proposal.id.not_in(mine),
    )


def team_of_proposal(proposal: Proposal) -> Select[User]:
    """Everyone on the proposal's team (they all hear of its submission and decisions)."""
    return (
        select(User)
        .join(TeamMember, TeamMember.user_id == User.id)
        .where(TeamMember.proposal_id == proposal.id, User.is_disabled.is_(False))
        .order_by(User.id)
    )


@rule("Only program staff start the review of proposals.")
def can_run_review(user: Any, proposal: Proposal) -> bool:
    """Program staff (they assign the reviewers)."""
    return is_staff(user)


@rule("Only program staff, or this call's allocation committee, decide on proposals.")
def can_decide_proposal(user: Any, proposal: Proposal) -> bool:
    """Program staff; where the call delegates its decisions, the members of its allocation
    committee instead (never on a proposal they are on the team of)."""
    u = as_user(user)
    if u is None:
        return False
    if proposal.call.committee_decides:
        decides = any(m.user_id == u.id for m in proposal.call.committee)
    else:
        decides = is_staff(u)
    # The team is read last: most people asked decide nothing.
    return decides and _role_of(u, proposal) is None


def deciders_of_proposal(proposal: Proposal) -> Select[User]:
    """Who ``can_decide_proposal`` lets decide ``proposal`` (whom a "ready for decision" mail asks)."""
    on_team = select(TeamMember.user_id).where(TeamMember.proposal_id == proposal.id)
    if proposal.call.committee_decides:
        deciders = select(CommitteeMember.user_id).where(
            CommitteeMember.call_id == proposal.call_id
        )
    else:
        deciders = select(RoleGrant.user_id).where(
            RoleGrant.role.in_([Role.PROGRAM_OFFICER, Role.ADMIN])
        )
    return (
        select(User)
        .where(User.is_disabled.is_(False), User.id.in_(deciders), User.id.not_in(on_team))
        .order_by(User.id)
    )


# --- team and invitations ----------------------------------------------------------------------


@rule("Only the principal investigator and co-investigators invite people to the team.")
def can_invite_to_proposal(user: Any, proposal: Proposal) -> bool:
    """The PI and co-PIs, while the proposal is not withdrawn."""
    return proposal.state != ProposalState.WITHDRAWN and _role_of(user, proposal) in EDITORS


@rule("Only the principal investigator hands the role on.")
def can_transfer_pi(user: Any, proposal: Proposal) -> bool:
    """The PI, to a co-PI, while the proposal is not withdrawn."""
    return proposal.state != ProposalState.WITHDRAWN and _role_of(user, proposal) == TeamRole.PI


@rule("Only the principal investigator removes people from the team.")
def can_remove_team_member(user: Any, proposal: Proposal) -> bool:
    """The PI, while the proposal is not withdrawn (the PI role itself is handed on, not removed)."""
    return proposal.state != ProposalState.WITHDRAWN and _role_of(user, proposal) == TeamRole.PI


@rule("This invitation was sent to another address. Log in with the invited account.")
def can_accept_invitation(user: Any, invitation: Invitation) -> bool:
    """The logged-in person whose verified e-mail address is the invited one (not already on
    the team)."""
    u = as_user(user)
    return (
        u is not None
        and u.email_verified
        and (u.email or "").lower() == invitation.email.lower()
        and _role_of(u, invitation.proposal) is None
    )


@rule("Only the principal investigator and co-investigators withdraw an invitation.")
def can_revoke_invitation(user: Any, invitation: Invitation) -> bool:
    """Whoever may invite to the proposal."""
    return can_invite_to_proposal(user, invitation.proposal)


# --- attachments -------------------------------------------------------------------------------


@rule(
    "Only the principal investigator and co-investigators change attachments, while it is a draft."
)
def can_attach_to_proposal(user: Any, proposal: Proposal) -> bool:
    """Whoever may edit the proposal."""
    return can_edit_proposal(user, proposal)


def is_proposer(user: Any) -> bool:
    """Someone who may propose (a member of a partner institution)."""
    return bool(partner_institutions_of(user))
