"""Factories of the outputs domain's objects: an active project with its planned outputs, a
release, and a final report in any state (each valid as the services would leave it)."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Sequence
from typing import Any

from portal.auth.models import User
from portal.core.models import AnySession, utcnow
from portal.outputs.models import FinalReport, ReleasedOutput, ReportState
from portal.proposals.models import OutputKind, PlannedOutput, Proposal, ProposalState
from tests.factories import make_proposal

_seq = itertools.count(1)

SUMMARY = (
    "We trained and released open reasoning models, their code and the evaluation data, "
    "and wrote two papers about what we learned."
)


def make_project(
    session: AnySession,
    *,
    planned: Sequence[OutputKind] = (OutputKind.WEIGHTS,),
    state: ProposalState = ProposalState.ACTIVE,
    start_date: dt.date | None = None,
    duration_months: int = 12,
    **kw: Any,
) -> Proposal:
    """A project (an approved proposal: ACTIVE) planning one output of each kind in ``planned``."""
    proposal = make_proposal(session, state=state, **kw)
    proposal.outputs = [
        PlannedOutput(kind=k, license="Apache-2.0", description=f"Planned {k.value} {i}")
        for i, k in enumerate(planned, 1)
    ]
    proposal.start_date = start_date or dt.date(2027, 1, 1)
    proposal.duration_months = duration_months
    session.flush()
    return proposal


def make_release(
    session: AnySession,
    proposal: Proposal,
    *,
    planned: PlannedOutput | None = None,
    kind: OutputKind | None = None,
    license: str = "Apache-2.0",
    by: User | None = None,
    **kw: Any,
) -> ReleasedOutput:
    """A release of ``proposal`` (checking off ``planned`` if given)."""
    n = next(_seq)
    output = ReleasedOutput(
        proposal_id=proposal.id,
        planned_output_id=planned.id if planned else None,
        kind=kind or (planned.kind if planned else OutputKind.CODE),
        title=kw.pop("title", f"Release {n}"),
        url=kw.pop("url", f"https://github.com/atom-lab/release-{n}"),
        license=license,
        doi=kw.pop("doi", None),
        released_on=kw.pop("released_on", dt.date(2026, 3, 1)),
        recorded_by_id=by.id if by else None,
        **kw,
    )
    session.add(output)
    session.flush()
    return output


def make_report(
    session: AnySession,
    proposal: Proposal,
    *,
    state: ReportState = ReportState.DUE,
    due_on: dt.date | None = None,
    by: User | None = None,
    **kw: Any,
) -> FinalReport:
    """The final report of ``proposal`` in ``state`` (submitted ones have their text and who
    submitted them; decided ones who decided)."""
    report = FinalReport(
        proposal_id=proposal.id,
        due_on=due_on or dt.date(2028, 1, 1),
        state=state,
        **kw,
    )
    if state != ReportState.DUE:
        report.summary = SUMMARY
        report.submitted_at = utcnow()
        report.submitted_by_id = by.id if by else None
    if state in (ReportState.RETURNED, ReportState.ACCEPTED):
        report.decided_at = utcnow()
        if state == ReportState.RETURNED:
            report.decision_note = "Please list the papers."
    session.add(report)
    session.flush()
    return report
