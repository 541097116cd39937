"""The gates agreements open: an approved institution becomes (and a suspended one is reinstated
as) a partner only with a partnership agreement in force; a project's awarded GPU-hours are
usable only once its contribution agreement is fully signed. Each closed gate says which
agreement, who must sign next, and links to it (``portal.core.hooks.Blocker``).

The compute domain reads ``USE_COMPUTE`` with ``portal.core.hooks.check_gates``.
"""

from __future__ import annotations

from sqlalchemy.orm import object_session

from portal.agreements.models import Agreement, AgreementKind, AgreementState, SubjectType
from portal.agreements.permissions import signers_of
from portal.agreements.services import in_force, standing
from portal.core import hooks
from portal.core.hooks import Blocker
from portal.core.models import AnySession
from portal.institutions.models import Institution, InstitutionState
from portal.notifications.rendering import external_url
from portal.proposals.models import Proposal, ProposalState

#: The gate keys (``<workflow>.<action>``; ``proposal.use_compute`` is read by the compute domain).
INSTITUTION_JOIN = "institution.join"
INSTITUTION_REINSTATE = "institution.reinstate"
USE_COMPUTE = hooks.USE_COMPUTE

#: How many names a blocker lists before "and N more".
_NAMES = 3


def _who(session: AnySession, agreement: Agreement) -> str:
    parts = []
    for signature in agreement.next_signatures:
        people = session.scalars(signers_of(signature).limit(_NAMES + 1)).all()
        names = ", ".join(p.display_name for p in people[:_NAMES])
        if len(people) > _NAMES:
            names += " and others"
        parts.append(f"{signature.party} ({names or 'nobody holds this role yet'})")
    return "; ".join(parts)


def _blocker(
    session: AnySession, kind: AgreementKind, subject_type: SubjectType, subject_id: int, what: str
) -> Blocker | None:
    if in_force(session, kind, subject_type, subject_id) is not None:
        return None
    agreement = standing(session, kind, subject_type, subject_id)
    label = kind.label
    if agreement is None:
        return Blocker(
            f"{what} needs a signed {label.lower()}, and none has been issued yet: program staff "
            "issue it.",
            external_url("agreements.issue", kind=kind.value, subject_id=subject_id),
            "Issue it",
            staff_only=True,
        )
    url = external_url("agreements.detail", agreement_id=agreement.id)
    if agreement.state == AgreementState.AWAITING:
        return Blocker(
            f"{what} needs the {label.lower()} “{agreement.title}” fully signed. "
            f"It is waiting on: {_who(session, agreement)}.",
            url,
            "Open the agreement",
        )
    # Signed, but a newer version asked for re-consent and its date has passed.
    return Blocker(
        f"{what} needs the {label.lower()} signed again: “{agreement.title}” lapsed on "
        f"{agreement.reconsent_by:%d %B %Y} and its newer version is not fully signed.",
        url,
        "Open the agreement",
    )


def partnership_blocker(session: AnySession, institution: Institution) -> Blocker | None:
    """Why ``institution`` cannot be a partner yet (None: it can)."""
    return _blocker(
        session,
        AgreementKind.PARTNERSHIP,
        SubjectType.INSTITUTION,
        institution.id,
        f"Partnership with {institution.name}",
    )


def compute_blocker(session: AnySession, proposal: Proposal) -> Blocker | None:
    """Why ``proposal``'s awarded GPU-hours are not usable yet (None: they are)."""
    return _blocker(
        session,
        AgreementKind.CONTRIBUTION,
        SubjectType.PROJECT,
        proposal.id,
        f"Using the GPU-hours awarded to “{proposal.title}”",
    )


def institution_notice(institution: Institution) -> Blocker | None:
    """On the institution's page while approval (or reinstatement) waits for the agreement."""
    session = object_session(institution)
    if session is None or institution.state not in (
        InstitutionState.APPROVED,
        InstitutionState.SUSPENDED,
        InstitutionState.PARTNER,
    ):
        return None
    return partnership_blocker(session, institution)


def project_notice(proposal: Proposal) -> Blocker | None:
    """On an active project's page until its contribution agreement is signed."""
    session = object_session(proposal)
    if session is None or proposal.state != ProposalState.ACTIVE:
        return None
    return compute_blocker(session, proposal)
