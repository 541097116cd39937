"""What the public pages show, read with a fixed number of aggregate queries whatever the number of
rows (no query per row), and handed to the templates as plain rows holding only public fields —
the templates never get a proposal or a person to wander from (its team, reviews, notes, e-mail).

Every query starts from the rules in ``portal.public.permissions``: partners only, awarded
projects of partners only, the PI's name only with their consent.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

from sqlalchemy import extract, func, select

from portal.auth.models import User
from portal.core.models import AnySession
from portal.institutions.models import Institution
from portal.outputs.models import ReleasedOutput
from portal.outputs.score import Score, openness_for_institutions, openness_for_projects
from portal.proposals.models import (
    Award,
    CallResource,
    OutputKind,
    Proposal,
    Resource,
    TeamMember,
    TeamRole,
)
from portal.public.countries import country_name
from portal.public.permissions import is_public_institution, is_public_project


@dataclass(frozen=True)
class PartnerRow:
    """A partner institution as the directory shows it."""

    id: int
    name: str
    country_code: str
    country: str
    website: str | None
    partner_since: dt.date | None
    projects: int
    score: Score


@dataclass(frozen=True)
class ProjectRow:
    """An awarded project as the public lists show it."""

    id: int
    title: str
    institution_id: int
    institution: str
    #: The PI's name when they agreed to be named; None otherwise ("PI not named").
    pi_name: str | None
    field: str
    hours: int
    #: Released outputs by kind (only kinds with some).
    outputs: dict[OutputKind, int]
    score: Score

    @property
    def output_count(self) -> int:
        return sum(self.outputs.values())


@dataclass(frozen=True)
class OutputRow:
    """A released output, with where to find it and its licence."""

    id: int
    proposal_id: int
    project: str
    kind: OutputKind
    title: str
    url: str
    license: str
    doi: str | None
    released_on: dt.date


@dataclass(frozen=True)
class ResourceHours:
    """GPU-hours awarded to a project on one resource."""

    resource: str
    hours: int


@dataclass
class Overview:
    """The program's figures, and the series behind the overview's charts."""

    partners: int = 0
    countries: int = 0
    projects: int = 0
    hours: int = 0
    outputs: int = 0
    #: (country name, partners), most partners first.
    by_country: list[tuple[str, int]] = field(default_factory=list)
    #: (year, month, GPU-hours awarded by decisions taken that month).
    by_month: list[tuple[int, int, int]] = field(default_factory=list)
    #: (kind, outputs released), every kind.
    by_kind: list[tuple[OutputKind, int]] = field(default_factory=list)


# --- partners ------------------------------------------------------------------------------------


def project_counts(session: AnySession, institution_ids: Sequence[int]) -> dict[int, int]:
    """Awarded projects per institution: one query."""
    if not institution_ids:
        return {}
    rows = session.execute(
        select(Proposal.institution_id, func.count(Proposal.id))
        .where(is_public_project(), Proposal.institution_id.in_(institution_ids))
        .group_by(Proposal.institution_id)
    )
    return {i: n for i, n in rows}


def partner_rows(session: AnySession, institutions: Sequence[Institution]) -> list[PartnerRow]:
    """The directory's rows for ``institutions`` (partners): three queries."""
    ids = [i.id for i in institutions]
    counts = project_counts(session, ids)
    scores = openness_for_institutions(session, ids)
    return [
        PartnerRow(
            id=i.id,
            name=i.name,
            country_code=i.country,
            country=country_name(i.country),
            website=i.website,
            partner_since=i.partner_since,
            projects=counts.get(i.id, 0),
            score=scores.get(i.id, Score()),
        )
        for i in institutions
    ]


def partner_countries(session: AnySession) -> list[tuple[str, str]]:
    """(code, name) of every country with a partner, by name: one query."""
    codes = session.scalars(select(Institution.country).where(is_public_institution()).distinct())
    return sorted(((c, country_name(c)) for c in codes), key=lambda cn: (cn[1].lower(), cn[0]))


# --- projects ------------------------------------------------------------------------------------


def awarded_hours(session: AnySession, proposal_ids: Sequence[int]) -> dict[int, int]:
    """GPU-hours awarded per project (the sum of its awards): one query."""
    if not proposal_ids:
        return {}
    rows = session.execute(
        select(Award.proposal_id, func.sum(Award.hours))
        .where(Award.proposal_id.in_(proposal_ids))
        .group_by(Award.proposal_id)
    )
    return {i: int(h or 0) for i, h in rows}


def output_counts(
    session: AnySession, proposal_ids: Sequence[int]
) -> dict[int, dict[OutputKind, int]]:
    """Released outputs per project and kind: one query."""
    out: dict[int, dict[OutputKind, int]] = defaultdict(dict)
    if not proposal_ids:
        return out
    rows = session.execute(
        select(ReleasedOutput.proposal_id, ReleasedOutput.kind, func.count(ReleasedOutput.id))
        .where(ReleasedOutput.proposal_id.in_(proposal_ids))
        .group_by(ReleasedOutput.proposal_id, ReleasedOutput.kind)
    )
    for pid, kind, n in rows:
        out[pid][OutputKind(kind)] = n
    return out


def consenting_pis(session: AnySession, proposal_ids: Sequence[int]) -> dict[int, str]:
    """The PI's name per project, for the PIs who agreed to be named (the others are never read
    from the database): one query."""
    if not proposal_ids:
        return {}
    rows = session.execute(
        select(TeamMember.proposal_id, User.display_name)
        .join(User, User.id == TeamMember.user_id)
        .where(
            TeamMember.proposal_id.in_(proposal_ids),
            TeamMember.role == TeamRole.PI,
            User.public_name.is_(True),
        )
    )
    return {pid: name for pid, name in rows}


def project_rows(session: AnySession, proposals: Sequence[Proposal]) -> list[ProjectRow]:
    """The public rows of ``proposals`` (awarded projects of partners, their institution loaded):
    five queries."""
    ids = [p.id for p in proposals]
    hours = awarded_hours(session, ids)
    outputs = output_counts(session, ids)
    pis = consenting_pis(session, ids)
    scores = openness_for_projects(session, ids)
    return [
        ProjectRow(
            id=p.id,
            title=p.title,
            institution_id=p.institution_id,
            institution=p.institution.name,
            pi_name=pis.get(p.id),
            field=p.field,
            hours=hours.get(p.id, 0),
            outputs=dict(sorted(outputs.get(p.id, {}).items(), key=lambda kv: _KIND_ORDER[kv[0]])),
            score=scores.get(p.id, Score()),
        )
        for p in proposals
    ]


_KIND_ORDER = {k: i for i, k in enumerate(OutputKind)}


def resource_hours(session: AnySession, proposal_id: int) -> list[ResourceHours]:
    """GPU-hours awarded to one project per resource: one query."""
    rows = session.execute(
        select(Resource.gpu_class, Resource.cluster, func.sum(Award.hours))
        .join(CallResource, CallResource.id == Award.call_resource_id)
        .join(Resource, Resource.id == CallResource.resource_id)
        .where(Award.proposal_id == proposal_id)
        .group_by(Resource.gpu_class, Resource.cluster)
        .order_by(Resource.gpu_class, Resource.cluster)
    )
    return [ResourceHours(f"{g} on {c}", int(h or 0)) for g, c, h in rows]


def outputs_of(
    session: AnySession,
    *,
    proposal_id: int | None = None,
    institution_id: int | None = None,
    limit: int | None = None,
) -> list[OutputRow]:
    """Released outputs of one public project, or of a partner's public projects, newest first:
    one query."""
    stmt = (
        select(ReleasedOutput, Proposal.title)
        .join(Proposal, Proposal.id == ReleasedOutput.proposal_id)
        .where(is_public_project())
        .order_by(ReleasedOutput.released_on.desc(), ReleasedOutput.id.desc())
    )
    if proposal_id is not None:
        stmt = stmt.where(Proposal.id == proposal_id)
    if institution_id is not None:
        stmt = stmt.where(Proposal.institution_id == institution_id)
    if limit is not None:
        stmt = stmt.limit(limit)
    return [
        OutputRow(
            id=o.id,
            proposal_id=o.proposal_id,
            project=title,
            kind=OutputKind(o.kind),
            title=o.title,
            url=o.url,
            license=o.license,
            doi=o.doi,
            released_on=o.released_on,
        )
        for o, title in session.execute(stmt)
    ]


@dataclass(frozen=True)
class Totals:
    """A partner's (or the program's) awarded projects, GPU-hours and released outputs."""

    projects: int
    hours: int
    outputs: int


def totals(session: AnySession, institution_id: int | None = None) -> Totals:
    """Awarded projects, their GPU-hours and their released outputs, for one partner or the
    whole program: one query."""
    where = [is_public_project()]
    if institution_id is not None:
        where.append(Proposal.institution_id == institution_id)
    hours = (
        select(func.coalesce(func.sum(Award.hours), 0))
        .join(Proposal, Proposal.id == Award.proposal_id)
        .where(*where)
        .scalar_subquery()
    )
    outputs = (
        select(func.count(ReleasedOutput.id))
        .join(Proposal, Proposal.id == ReleasedOutput.proposal_id)
        .where(*where)
        .scalar_subquery()
    )
    projects = select(func.count(Proposal.id)).where(*where).scalar_subquery()
    row = session.execute(select(projects, hours, outputs)).one()
    return Totals(projects=int(row[0] or 0), hours=int(row[1] or 0), outputs=int(row[2] or 0))


# --- the overview --------------------------------------------------------------------------------


def overview(session: AnySession) -> Overview:
    """The program's figures and chart series: four queries."""
    ov = Overview()
    country_rows = session.execute(
        select(Institution.country, func.count(Institution.id))
        .where(is_public_institution())
        .group_by(Institution.country)
    ).all()
    by_country: Counter[str] = Counter()
    for code, n in country_rows:
        by_country[country_name(code)] += n
    ov.by_country = sorted(by_country.items(), key=lambda cn: (-cn[1], cn[0].lower()))
    ov.partners = sum(by_country.values())
    ov.countries = len(by_country)

    year = extract("year", Proposal.decided_at)
    month = extract("month", Proposal.decided_at)
    ov.by_month = [
        (int(y), int(m), int(h or 0))
        for y, m, h in session.execute(
            select(year, month, func.sum(Award.hours))
            .join(Proposal, Proposal.id == Award.proposal_id)
            .where(is_public_project(), Proposal.decided_at.is_not(None))
            .group_by(year, month)
            .order_by(year, month)
        )
        if y is not None and m is not None
    ]

    kinds = dict(
        session.execute(
            select(ReleasedOutput.kind, func.count(ReleasedOutput.id))
            .join(Proposal, Proposal.id == ReleasedOutput.proposal_id)
            .where(is_public_project())
            .group_by(ReleasedOutput.kind)
        ).all()
    )
    ov.by_kind = [(k, int(kinds.get(k, 0))) for k in OutputKind]

    t = totals(session)
    ov.projects, ov.hours, ov.outputs = t.projects, t.hours, t.outputs
    return ov
