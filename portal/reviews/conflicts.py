"""Conflicts of interest between a reviewer and a proposal, from verified facts first: the
institutions the reviewer and the team belong to (active affiliations, and ended ones within
``CONFLICT_YEARS``), the team itself, what the reviewer declared, and — where configured — a
proposal of the reviewer's own in the same call. A program officer's waiver lifts one reviewer's
conflicts on one proposal."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import and_, exists, or_, select
from sqlalchemy.orm import aliased, object_session
from sqlalchemy.sql.elements import ColumnElement

from portal.auth.models import User
from portal.core.models import AnySession, utcnow
from portal.institutions.models import Affiliation, AffiliationState
from portal.proposals.models import Proposal, ProposalState, TeamMember
from portal.reviews.models import ConflictWaiver, DeclaredConflict


@dataclass(frozen=True)
class Conflict:
    #: ``team``, ``institution``, ``declared_person``, ``declared_institution``, ``own_proposal``.
    kind: str
    #: Readable, for staff.
    detail: str


def _counts(since: dt.datetime) -> ColumnElement[bool]:
    """An affiliation that counts: active, or ended after ``since``."""
    return or_(
        Affiliation.state == AffiliationState.ACTIVE,
        (Affiliation.state == AffiliationState.ENDED) & (Affiliation.updated_at >= since),
    )


def _institutions(
    session: AnySession, user_ids: set[int], since: dt.datetime
) -> dict[int, set[int]]:
    """Institution ids per user: active affiliations, and ended ones that ended after ``since``."""
    rows = session.execute(
        select(Affiliation.user_id, Affiliation.institution_id).where(
            Affiliation.user_id.in_(user_ids), _counts(since)
        )
    ).all()
    out: dict[int, set[int]] = {u: set() for u in user_ids}
    for user_id, inst_id in rows:
        out[user_id].add(inst_id)
    return out


def conflicts_of(
    reviewer: User,
    proposal: Proposal,
    *,
    years: int,
    own_proposal_conflicts: bool,
    session: AnySession | None = None,
) -> list[Conflict]:
    """Every conflict between ``reviewer`` and ``proposal`` (waived or not)."""
    session = session or object_session(proposal)
    assert session is not None, "the proposal must be in a session"
    team = {m.user_id: m for m in proposal.team}
    out: list[Conflict] = []
    if reviewer.id in team:
        out.append(Conflict("team", "The reviewer is on the proposal's team."))
    since = utcnow() - dt.timedelta(days=365 * years)
    insts = _institutions(session, {reviewer.id, *team}, since)
    team_insts = {proposal.institution_id}.union(*(insts[u] for u in team))
    shared = insts[reviewer.id] & team_insts
    if shared:
        out.append(
            Conflict(
                "institution",
                f"The reviewer is (or was within {years} years) at an institution of the team.",
            )
        )
    for declared in session.scalars(
        select(DeclaredConflict).where(DeclaredConflict.reviewer_id == reviewer.id)
    ):
        if declared.person_id is not None and declared.person_id in team:
            out.append(Conflict("declared_person", f"Declared: {declared.reason or 'a person'}"))
        if declared.institution_id is not None and declared.institution_id in team_insts:
            out.append(
                Conflict("declared_institution", f"Declared: {declared.reason or 'an institution'}")
            )
    if own_proposal_conflicts:
        own = session.scalar(
            select(Proposal.id)
            .join(TeamMember, TeamMember.proposal_id == Proposal.id)
            .where(
                Proposal.call_id == proposal.call_id,
                Proposal.id != proposal.id,
                Proposal.state != ProposalState.WITHDRAWN,
                TeamMember.user_id == reviewer.id,
            )
            .limit(1)
        )
        if own is not None:
            out.append(Conflict("own_proposal", "The reviewer has a proposal in the same call."))
    return out


def is_waived(session: AnySession, reviewer_id: int, proposal_id: int) -> bool:
    return (
        session.scalar(
            select(ConflictWaiver.id).where(
                ConflictWaiver.reviewer_id == reviewer_id, ConflictWaiver.proposal_id == proposal_id
            )
        )
        is not None
    )


def blocking_conflicts(
    reviewer: User, proposal: Proposal, *, years: int, own_proposal_conflicts: bool
) -> list[Conflict]:
    """The conflicts that keep ``reviewer`` from ``proposal``: all of them, unless waived (a
    waiver never lifts being on the team)."""
    session = object_session(proposal)
    assert session is not None
    found = conflicts_of(
        reviewer, proposal, years=years, own_proposal_conflicts=own_proposal_conflicts
    )
    if found and is_waived(session, reviewer.id, proposal.id):
        return [c for c in found if c.kind == "team"]
    return found


#: Another proposal the reviewer is on (built once: an alias is costly to build).
_OWN = aliased(Proposal, name="own_proposals")


def blocked(reviewer_id: int, *, years: int, own_proposal_conflicts: bool) -> ColumnElement[bool]:
    """``blocking_conflicts`` as a condition on ``Proposal`` (which the statement selects from):
    whether the reviewer has a conflict with the proposal that keeps them from it. A list of
    their assignments filters with it in SQL, so it pages the rows it shows; a page asks it of
    one proposal in one statement. A test checks that it agrees with ``blocking_conflicts``."""
    counts = _counts(utcnow() - dt.timedelta(days=365 * years))
    team = (
        select(TeamMember.user_id).where(TeamMember.proposal_id == Proposal.id).correlate(Proposal)
    )
    reviewer_insts = select(Affiliation.institution_id).where(
        Affiliation.user_id == reviewer_id, counts
    )
    members_insts = select(Affiliation.institution_id).where(Affiliation.user_id.in_(team), counts)
    conflicts = [
        # an institution of the reviewer's is the proposal's, or a team member's
        Proposal.institution_id.in_(reviewer_insts),
        exists().where(
            Affiliation.user_id.in_(team), counts, Affiliation.institution_id.in_(reviewer_insts)
        ),
        # a person or an institution the reviewer declared
        exists().where(
            DeclaredConflict.reviewer_id == reviewer_id,
            or_(
                DeclaredConflict.person_id.in_(team),
                DeclaredConflict.institution_id == Proposal.institution_id,
                DeclaredConflict.institution_id.in_(members_insts),
            ),
        ),
    ]
    if own_proposal_conflicts:
        # a proposal of their own in the same call (asked from their side: they are on few)
        conflicts.append(
            Proposal.call_id.in_(
                select(_OWN.call_id)
                .join(TeamMember, TeamMember.proposal_id == _OWN.id)
                .where(
                    TeamMember.user_id == reviewer_id,
                    _OWN.id != Proposal.id,
                    _OWN.state != ProposalState.WITHDRAWN,
                )
            )
        )
    on_team = exists().where(
        TeamMember.proposal_id == Proposal.id, TeamMember.user_id == reviewer_id
    )
    waived = exists().where(
        ConflictWaiver.reviewer_id == reviewer_id, ConflictWaiver.proposal_id == Proposal.id
    )
    return or_(on_team, and_(~waived, or_(*conflicts)))  # being on the team is never waived
