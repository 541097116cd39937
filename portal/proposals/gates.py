"""What a suspended (or not yet partner) institution stops here: handing in proposals, and the use
of its projects' GPU-hours (signatures are stopped by the agreements engine itself).

Only a partner in good standing takes part in the program: a proposal of any other institution is
not handed to the program — neither submitted nor sent for (or given) its institution's
endorsement — and its projects' awarded GPU-hours are not usable (``hooks.USE_COMPUTE``, read by
the allocations domain before an allocation starts or resumes). Starting a new proposal is refused
earlier, by ``portal.proposals.permissions.can_propose`` (members of partner institutions only).
"""

from __future__ import annotations

from portal.core import hooks
from portal.core.hooks import Blocker
from portal.core.models import AnySession
from portal.institutions.models import Institution, InstitutionState
from portal.proposals.models import Proposal, ProposalState

#: The proposal steps that hand a proposal to the program: submitted directly, or sent to its
#: institution's signing official, who endorses it (which submits it).
PROPOSAL_SUBMISSION = ("proposal.submit", "proposal.submit_for_endorsement", "proposal.endorse")
USE_COMPUTE = hooks.USE_COMPUTE

#: Proposal states in which the team may still hand the proposal in (its page says why it cannot).
_SUBMITTABLE = frozenset(
    {
        ProposalState.DRAFT,
        ProposalState.RETURNED,
        ProposalState.REVISE,
        ProposalState.AWAITING_ENDORSEMENT,
    }
)


def standing(institution: Institution) -> str | None:
    """Why ``institution`` is not a partner in good standing, in words (None: it is one)."""
    state = institution.state
    if state == InstitutionState.PARTNER:
        return None
    if state == InstitutionState.SUSPENDED:
        return f"{institution.name} is suspended until program staff reinstate it"
    if state == InstitutionState.WITHDRAWN:
        return f"{institution.name} has withdrawn from the program"
    return f"{institution.name} is not a partner ({state.label.lower()})"


def _not_taken(proposal: Proposal) -> Blocker | None:
    why = standing(proposal.institution)
    if why is None:
        return None
    return Blocker(f"Proposals are taken from partner institutions only: {why}.")


def proposal_blocker(session: AnySession, proposal: Proposal) -> Blocker | None:
    """Why ``proposal`` cannot be handed to the program now: its institution is not a partner."""
    return _not_taken(proposal)


def compute_blocker(session: AnySession, proposal: Proposal) -> Blocker | None:
    """Why the GPU-hours awarded to ``proposal`` cannot be used: its institution is not a partner."""
    why = standing(proposal.institution)
    if why is None:
        return None
    return Blocker(
        f"The GPU-hours awarded to “{proposal.title}” are usable only while its institution is a "
        f"partner: {why}."
    )


def proposal_notice(proposal: Proposal) -> Blocker | None:
    """On the page of a proposal its team could still hand in, while the institution cannot."""
    if proposal.state not in _SUBMITTABLE:
        return None
    return _not_taken(proposal)


def register() -> None:
    """Register the gates (``portal.core.hooks``) this module defines."""
    for key in PROPOSAL_SUBMISSION:
        hooks.register_gate(key, proposal_blocker)
    hooks.register_gate(USE_COMPUTE, compute_blocker)
    hooks.register_notice(Proposal, proposal_notice)
