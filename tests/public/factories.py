"""Many rows at once, for the query-count tests: partners with awarded projects, PIs (every other
one consenting), awards, planned and released outputs, open calls."""

from __future__ import annotations

import datetime as dt
import itertools

from sqlalchemy.orm import Session

from portal.auth.models import User
from portal.core.models import utcnow
from portal.institutions.models import Institution, InstitutionState
from portal.outputs.models import ReleasedOutput
from portal.proposals.models import (
    FIELDS,
    Award,
    Call,
    CallResource,
    CallState,
    OutputKind,
    PlannedOutput,
    Proposal,
    ProposalState,
    TeamMember,
    TeamRole,
)
from tests.factories import make_call, make_resource, make_ror

_seq = itertools.count(50_000)
COUNTRIES = ("DE", "JP", "US", "KE", "BR", "IN", "NL")
KINDS = list(OutputKind)


def partners(db: Session, n: int) -> list[Institution]:
    out = []
    for _ in range(n):
        k = next(_seq)
        inst = Institution(
            name=f"Partner University {k}",
            country=COUNTRIES[k % len(COUNTRIES)],
            ror_id=make_ror(k),
            website=f"https://uni{k}.example.net",
            state=InstitutionState.PARTNER,
            partner_since=dt.date(2026, 1 + k % 12, 1),
        )
        db.add(inst)
        out.append(inst)
    db.flush()
    return out


def projects(
    db: Session, call: Call, institutions: list[Institution], *, outputs: int = 1
) -> list[Proposal]:
    """One awarded project at each of ``institutions`` (repeat an institution for more), each with
    ``outputs`` released outputs, decided in months spread over two years."""
    now = utcnow()
    made = []
    for inst in institutions:
        k = next(_seq)
        pi = User(
            display_name=f"Researcher {k}",
            email=f"researcher{k}@example.org",
            email_verified=True,
            public_name=k % 2 == 0,
        )
        proposal = Proposal(
            call=call,
            institution=inst,
            title=f"Awarded project {k}",
            abstract="An open project.",
            field=FIELDS[k % len(FIELDS)],
            state=ProposalState.ACTIVE,
            submitted_at=now,
            decided_at=now - dt.timedelta(days=31 * (k % 24)),
            version=1,
            start_date=dt.date(2027, 1, 1),
            duration_months=12,
        )
        proposal.team.append(TeamMember(user=pi, role=TeamRole.PI))
        proposal.outputs = [
            PlannedOutput(kind=KINDS[i % 4], license="Apache-2.0", description="Planned")
            for i in range(2)
        ]
        proposal.awards = [Award(call_resource_id=call.resources[0].id, hours=100 + k % 7)]
        db.add(proposal)
        made.append(proposal)
    db.flush()
    for proposal in made:
        for i in range(outputs):
            db.add(
                ReleasedOutput(
                    proposal_id=proposal.id,
                    planned_output_id=proposal.outputs[0].id if i == 0 else None,
                    kind=KINDS[i % 4],
                    title=f"Output {i} of {proposal.title}",
                    url=f"https://example.net/{proposal.id}/{i}",
                    license=("Apache-2.0", "CC-BY-4.0", "LicenseRef-closed")[i % 3],
                    released_on=dt.date(2027, 1 + i % 12, 1),
                )
            )
    db.flush()
    return made


def open_calls(db: Session, n: int) -> list[Call]:
    resource = make_resource(db)
    now = utcnow()
    calls = []
    for i in range(n):
        call = Call(
            title=f"Open call {next(_seq)}",
            description="Compute for open research.",
            state=CallState.OPEN,
            closes_at=now + dt.timedelta(days=10 + i) if i % 2 else None,
        )
        call.resources.append(
            CallResource(resource=resource, budget_hours=10_000, max_request_hours=1_000)
        )
        db.add(call)
        calls.append(call)
    db.flush()
    return calls


def a_call(db: Session) -> Call:
    return make_call(db)
