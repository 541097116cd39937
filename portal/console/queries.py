"""What the console shows of one institution, each as one query (or a fixed few) whatever the
number of rows: its members and their roles, requests to join, proposals awaiting endorsement,
agreements waiting on its signature, and its projects with their GPU-hours, dataset access and
openness.

Every list starts from the owning domain's own list filter (``visible_*``, ``awaiting_*``,
``signable_*``) narrowed to the institution, so the console never shows what the domain's own
pages would refuse."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import Select, exists, func, select
from sqlalchemy.orm import Session, contains_eager, selectinload

from portal.agreements.models import (
    Agreement,
    AgreementState,
    PartyRole,
    Signature,
    SignatureState,
)
from portal.agreements.permissions import signable_signatures, visible_agreements
from portal.allocations.models import SECONDS_PER_HOUR, Allocation
from portal.auth.models import (
    INSTITUTION_ROLES,
    IdentityProvider,
    ProviderInstitution,
    Role,
    RoleGrant,
    User,
)
from portal.core.models import AnySession
from portal.datasets.models import Grant, GrantState
from portal.institutions.models import Affiliation, AffiliationState, Institution
from portal.institutions.permissions import decidable_affiliations
from portal.outputs.score import Score, openness_for_institutions, openness_for_projects
from portal.proposals.models import Award, Proposal, ProposalState, TeamMember, TeamRole
from portal.proposals.permissions import awaiting_endorsement, visible_proposals


def _plain(session: AnySession) -> Session:
    """The session for ``portal.outputs.score``, typed for a plain Session (a scoped session
    answers the same calls)."""
    return cast(Session, session)


# --- members and requests ------------------------------------------------------------------------


def members(institution: Institution) -> Select[Affiliation]:
    """The institution's members: its active affiliations, with each person."""
    return (
        select(Affiliation)
        .join(Affiliation.user)
        .where(
            Affiliation.institution_id == institution.id,
            Affiliation.state == AffiliationState.ACTIVE,
        )
        .options(contains_eager(Affiliation.user))
    )


def roles_at(
    session: AnySession, institution: Institution, user_ids: Sequence[int]
) -> dict[int, list[Role]]:
    """The roles each person holds at the institution (researcher, signing official): one query."""
    out: dict[int, list[Role]] = {i: [] for i in user_ids}
    if not user_ids:
        return out
    rows = session.execute(
        select(RoleGrant.user_id, RoleGrant.role)
        .where(
            RoleGrant.institution_id == institution.id,
            RoleGrant.user_id.in_(user_ids),
            RoleGrant.role.in_(INSTITUTION_ROLES),
        )
        .order_by(RoleGrant.user_id, RoleGrant.role)
    )
    for user_id, role in rows:
        out[user_id].append(role)
    return out


def join_requests(institution: Institution) -> Select[Affiliation]:
    """The open requests to join the institution, with each person."""
    return (
        select(Affiliation)
        .join(Affiliation.user)
        .where(
            Affiliation.institution_id == institution.id,
            Affiliation.state == AffiliationState.REQUESTED,
        )
        .options(contains_eager(Affiliation.user))
    )


def decidable_ids(session: AnySession, user: Any, ids: Sequence[int]) -> set[int]:
    """Which of the affiliations ``ids`` ``user`` may decide (``decidable_affiliations``): one
    query, rather than the rule's own query per request for program officers."""
    if not ids:
        return set()
    stmt = decidable_affiliations(user).where(Affiliation.id.in_(ids))
    return set(session.scalars(stmt.with_only_columns(Affiliation.id)))


# --- proposals and agreements --------------------------------------------------------------------


def awaiting_institution(user: Any, institution: Institution) -> Select[Proposal]:
    """Proposals of the institution waiting for its endorsement that ``user`` may see."""
    return (
        visible_proposals(user)
        .where(
            Proposal.institution_id == institution.id,
            Proposal.state == ProposalState.AWAITING_ENDORSEMENT,
        )
        .options(
            selectinload(Proposal.call),
            selectinload(Proposal.team).selectinload(TeamMember.user),
        )
    )


def endorsable_ids(session: AnySession, user: Any, institution: Institution) -> set[int]:
    """Which of them ``user`` may endorse (``awaiting_endorsement``): one query."""
    stmt = awaiting_endorsement(user).where(Proposal.institution_id == institution.id)
    return set(session.scalars(stmt.with_only_columns(Proposal.id)))


def _institution_slot_pending() -> Any:
    return exists().where(
        Signature.agreement_id == Agreement.id,
        Signature.role == PartyRole.SIGNING_OFFICIAL,
        Signature.state == SignatureState.PENDING,
    )


def awaiting_signature(user: Any, institution: Institution) -> Select[Agreement]:
    """Agreements still being signed whose signing-official slot for the institution is not signed
    yet (its turn may not have come: who signs next is shown), that ``user`` may see."""
    return (
        visible_agreements(user)
        .where(
            Agreement.institution_id == institution.id,
            Agreement.state == AgreementState.AWAITING,
            _institution_slot_pending(),
        )
        .options(selectinload(Agreement.signatures))
    )


def to_sign(session: AnySession, user: Any, institution: Institution) -> dict[int, int]:
    """Agreement id → the signature ``user`` may give for the institution now (the agreements'
    own "to sign" list, narrowed to the institution's slots): one query."""
    stmt = signable_signatures(user).where(
        Agreement.institution_id == institution.id,
        Signature.role == PartyRole.SIGNING_OFFICIAL,
    )
    rows = session.execute(stmt.with_only_columns(Signature.agreement_id, Signature.id))
    return {agreement_id: signature_id for agreement_id, signature_id in rows}


# --- projects ------------------------------------------------------------------------------------


def projects(institution: Institution) -> Select[Proposal]:
    """The institution's projects (active proposals); their PIs come from ``pis``."""
    return select(Proposal).where(
        Proposal.institution_id == institution.id,
        Proposal.state == ProposalState.ACTIVE,
    )


def pis(session: AnySession, ids: Sequence[int]) -> dict[int, User]:
    """The principal investigator of each proposal ``ids``: one query, however many (an
    unpaged download included)."""
    if not ids:
        return {}
    rows = session.execute(
        select(TeamMember.proposal_id, User)
        .join(User, User.id == TeamMember.user_id)
        .where(TeamMember.proposal_id.in_(ids), TeamMember.role == TeamRole.PI)
    )
    return {proposal_id: user for proposal_id, user in rows}


@dataclass(frozen=True)
class ProjectFigures:
    """A project's GPU-hours awarded and used, its active dataset access, and its openness."""

    awarded_hours: int = 0
    used_gpu_seconds: int = 0
    active_grants: int = 0
    openness: Score = field(default_factory=Score)

    @property
    def used_hours(self) -> float:
        return self.used_gpu_seconds / SECONDS_PER_HOUR


def project_figures(session: AnySession, ids: Sequence[int]) -> dict[int, ProjectFigures]:
    """The figures of each project ``ids``: three aggregate queries whatever their number."""
    if not ids:
        return {}
    rows = session.execute(
        select(
            Proposal.id,
            select(func.sum(Award.hours))
            .where(Award.proposal_id == Proposal.id)
            .correlate(Proposal)
            .scalar_subquery(),
            select(func.sum(Allocation.used_gpu_seconds))
            .where(Allocation.proposal_id == Proposal.id)
            .correlate(Proposal)
            .scalar_subquery(),
            select(func.count(Grant.id))
            .where(Grant.proposal_id == Proposal.id, Grant.state == GrantState.ACTIVE)
            .correlate(Proposal)
            .scalar_subquery(),
        ).where(Proposal.id.in_(ids))
    ).all()
    awarded = {pid: a for pid, a, _, _ in rows}
    used = {pid: u for pid, _, u, _ in rows}
    grants = {pid: g for pid, _, _, g in rows}
    scores = openness_for_projects(_plain(session), ids)
    return {
        i: ProjectFigures(
            awarded_hours=int(awarded.get(i) or 0),
            used_gpu_seconds=int(used.get(i) or 0),
            active_grants=int(grants.get(i) or 0),
            openness=scores.get(i, Score()),
        )
        for i in ids
    }


@dataclass(frozen=True)
class Totals:
    """The institution's projects added up."""

    projects: int
    awarded_hours: int
    used_gpu_seconds: int
    #: Active dataset access given for its projects.
    project_grants: int
    #: Active dataset access held by its people, for a project or not.
    all_grants: int
    openness: Score

    @property
    def used_hours(self) -> float:
        return self.used_gpu_seconds / SECONDS_PER_HOUR


def totals(session: AnySession, institution: Institution) -> Totals:
    """The institution's totals over all its projects: one query of aggregates (and the
    openness score's)."""
    active = select(Proposal.id).where(
        Proposal.institution_id == institution.id, Proposal.state == ProposalState.ACTIVE
    )
    grants = select(func.count(Grant.id)).where(
        Grant.institution_id == institution.id, Grant.state == GrantState.ACTIVE
    )
    count, awarded, used, project_grants, all_grants = session.execute(
        select(
            select(func.count()).select_from(active.subquery()).scalar_subquery(),
            select(func.coalesce(func.sum(Award.hours), 0))
            .where(Award.proposal_id.in_(active))
            .scalar_subquery(),
            select(func.coalesce(func.sum(Allocation.used_gpu_seconds), 0))
            .where(Allocation.proposal_id.in_(active))
            .scalar_subquery(),
            grants.where(Grant.proposal_id.in_(active)).scalar_subquery(),
            grants.scalar_subquery(),
        )
    ).one()
    score = openness_for_institutions(_plain(session), [institution.id]).get(
        institution.id, Score()
    )
    return Totals(
        projects=int(count or 0),
        awarded_hours=int(awarded or 0),
        used_gpu_seconds=int(used or 0),
        project_grants=int(project_grants or 0),
        all_grants=int(all_grants or 0),
        openness=score,
    )


# --- the start page ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Counts:
    """How much waits in each part of the console."""

    requests: int
    members: int
    endorsements: int
    agreements: int


def _count(stmt: Select[Any]) -> Any:
    return select(func.count()).select_from(stmt.order_by(None).subquery()).scalar_subquery()


def counts(session: AnySession, user: Any, institution: Institution) -> Counts:
    """The figures of the console's start page: four counts, in one query."""
    row = session.execute(
        select(
            _count(join_requests(institution)),
            _count(members(institution)),
            _count(awaiting_institution(user, institution)),
            _count(awaiting_signature(user, institution)),
        )
    ).one()
    return Counts(*(int(n or 0) for n in row))


def login_mappings(session: AnySession, institution: Institution) -> list[ProviderInstitution]:
    """The logins that serve the institution, each with its provider: one query (and its
    provider's, selected in)."""
    return list(
        session.scalars(
            select(ProviderInstitution)
            .join(IdentityProvider, IdentityProvider.id == ProviderInstitution.provider_id)
            .where(ProviderInstitution.institution_id == institution.id)
            .options(selectinload(ProviderInstitution.provider))
            .order_by(IdentityProvider.name, ProviderInstitution.id)
        )
    )


def officials(session: AnySession, institution: Institution) -> list[User]:
    """The institution's signing officials (whoever holds the role there): one query."""
    return list(
        session.scalars(
            select(User)
            .join(RoleGrant, RoleGrant.user_id == User.id)
            .where(
                RoleGrant.role == Role.SIGNING_OFFICIAL,
                RoleGrant.institution_id == institution.id,
            )
            .order_by(User.display_name, User.id)
        )
    )
