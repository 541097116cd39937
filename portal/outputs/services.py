"""Recording what a project released, the final report it owes at its end (created when the
project is approved, reminded 30 and 7 days before it is due and once overdue, submitted by the
team, accepted or returned by program staff), and the scheduled sweep. The acting user is passed in
(None for the sweep: nobody); services flush, the caller commits."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import selectinload
from sqlalchemy.orm.attributes import set_committed_value

from portal.auth.models import User
from portal.core import audit
from portal.core.dates import add_months
from portal.core.errors import ConflictError, InvalidTransitionError, ValidationError
from portal.core.models import AnySession, utcnow
from portal.core.permissions import check
from portal.outputs import emails, permissions
from portal.outputs.checklist import (
    date_problem,
    doi_problem,
    license_problem,
    normalize_doi,
    planned_problem,
    url_problem,
)
from portal.outputs.models import FinalReport, ReleasedOutput, ReportState
from portal.outputs.workflow import REPORT_WORKFLOW
from portal.proposals.models import OutputKind, PlannedOutput, Proposal, ProposalState

#: Reminders before the report is due, in days, latest first; then one once it is overdue.
REMINDER_DAYS = (30, 7)
OVERDUE = "overdue"
#: Each reminder's ``last_reminder`` value, in the order they are sent.
REMINDER_ORDER = (*(str(d) for d in REMINDER_DAYS), OVERDUE)
#: Reports the team still owes.
OWED = frozenset({ReportState.DUE, ReportState.RETURNED})
#: The longest summary and outcomes accepted.
MAX_TEXT = 20_000

# --- outputs -------------------------------------------------------------------------------------

#: The fields of a released output a form edits.
OUTPUT_FIELDS = ("kind", "title", "url", "license", "doi", "released_on", "planned_output_id")


def taken_planned_ids(
    session: AnySession, proposal_id: int, *, except_output: int | None
) -> set[int]:
    """The project's planned outputs already checked off by a release (other than
    ``except_output``)."""
    return set(
        session.scalars(
            select(ReleasedOutput.planned_output_id).where(
                ReleasedOutput.proposal_id == proposal_id,
                ReleasedOutput.planned_output_id.is_not(None),
                ReleasedOutput.id != (except_output or -1),
            )
        )
    )


def _clean(
    session: AnySession, proposal: Proposal, output_id: int | None, **fields: Any
) -> dict[str, Any]:
    """``fields`` checked and tidied (a DOI without its https://doi.org/ prefix); a
    ValidationError says what is wrong with the first bad one."""
    title = str(fields.get("title") or "").strip()
    if not title:
        raise ValidationError("Give the output a title.")
    if len(title) > 300:
        raise ValidationError("The title is 300 characters at most.")
    url = str(fields.get("url") or "").strip()
    licence = str(fields.get("license") or "").strip()
    doi = normalize_doi(fields.get("doi"))
    kind = OutputKind(fields["kind"])
    released_on: dt.date | None = fields.get("released_on")
    for problem in (
        url_problem(url) or (None if len(url) <= 500 else "The address is 500 characters at most."),
        license_problem(licence),
        doi_problem(doi),
        date_problem(released_on, utcnow().date()),
    ):
        if problem:
            raise ValidationError(problem)
    planned_id: int | None = fields.get("planned_output_id") or None
    planned = session.get(PlannedOutput, planned_id) if planned_id else None
    if planned_id and planned is None:
        raise ValidationError("That planned output does not exist.")
    problem = planned_problem(
        planned,
        proposal_id=proposal.id,
        kind=kind,
        taken=taken_planned_ids(session, proposal.id, except_output=output_id),
    )
    if problem:
        raise ValidationError(problem)
    return {
        "kind": kind,
        "title": title,
        "url": url,
        "license": licence,
        "doi": doi,
        "released_on": released_on,
        "planned_output_id": planned_id,
    }


def _flush_unique(session: AnySession) -> None:
    """Flush; a planned output checked off by two releases at once is a conflict, not a 500."""
    try:
        with session.begin_nested():
            session.flush()
    except IntegrityError:
        raise ConflictError(
            "Another release checks off that planned output already: choose another, or none."
        ) from None


def record_output(
    session: AnySession, proposal: Proposal, *, actor: User, **fields: Any
) -> ReleasedOutput:
    """Record something the project released (its PI, co-investigators or program staff, while
    the project is active), checking off the planned output it fulfils if any."""
    check(permissions.can_record_output, actor, proposal)
    values = _clean(session, proposal, None, **fields)
    output = ReleasedOutput(proposal_id=proposal.id, recorded_by_id=actor.id, **values)
    session.add(output)
    _flush_unique(session)
    audit.record(
        session,
        "output.record",
        actor=actor,
        obj=output,
        proposal_id=proposal.id,
        kind=output.kind.value,
        license=output.license,
        planned_output_id=output.planned_output_id,
    )
    return output


def update_output(
    session: AnySession, output: ReleasedOutput, *, actor: User, **fields: Any
) -> ReleasedOutput:
    """Change a recorded output (whoever may record the project's outputs)."""
    check(permissions.can_edit_output, actor, output)
    merged = {k: fields.get(k, getattr(output, k)) for k in OUTPUT_FIELDS}
    values = _clean(session, output.proposal, output.id, **merged)
    changed = sorted(k for k, v in values.items() if getattr(output, k) != v)
    for key, value in values.items():
        setattr(output, key, value)
    _flush_unique(session)
    audit.record(
        session,
        "output.update",
        actor=actor,
        obj=output,
        proposal_id=output.proposal_id,
        changed=changed,
    )
    return output


def delete_output(session: AnySession, output: ReleasedOutput, *, actor: User) -> None:
    """Remove a recorded output (its planned output is no longer checked off)."""
    check(permissions.can_edit_output, actor, output)
    audit.record(
        session,
        "output.delete",
        actor=actor,
        obj=output,
        proposal_id=output.proposal_id,
        title=output.title,
        url=output.url,
    )
    session.delete(output)
    session.flush()


# --- final reports -------------------------------------------------------------------------------


def project_end(proposal: Proposal) -> dt.date | None:
    """The project's last day (start plus duration), or None when it has no dates."""
    if proposal.start_date is None or not proposal.duration_months:
        return None
    return add_months(proposal.start_date, proposal.duration_months)


def report_of(session: AnySession, proposal_id: int) -> FinalReport | None:
    return session.scalar(select(FinalReport).where(FinalReport.proposal_id == proposal_id))


def ensure_report(session: AnySession, proposal: Proposal) -> FinalReport | None:
    """The final report an ACTIVE project owes, due at its end: created (due) if missing. None for
    a project that is not active or has no dates. Two callers at once create one report."""
    existing = report_of(session, proposal.id)
    if existing is not None:
        return existing
    due_on = project_end(proposal)
    if proposal.state != ProposalState.ACTIVE or due_on is None:
        return None
    report = FinalReport(proposal_id=proposal.id, due_on=due_on, state=ReportState.DUE)
    try:
        with session.begin_nested():
            session.add(report)
            session.flush()
    except IntegrityError:
        return report_of(session, proposal.id)
    audit.record(session, "final_report.create", actor=None, obj=report, due_on=due_on.isoformat())
    return report


def on_proposal_approved(session: AnySession, step: Any) -> None:
    """``proposal.approve``: the project's final report is due at its end."""
    ensure_report(session, step.obj)


def submit_report(
    session: AnySession, report: FinalReport, *, actor: User, summary: str, outcomes: str
) -> FinalReport:
    """Send the final report (its summary and outcomes; the outputs are the recorded ones) to
    program staff: its PI, co-investigators or program staff, while it is due or returned."""
    check(permissions.can_submit_report, actor, report)
    if report.state not in OWED:
        raise InvalidTransitionError(
            f"The report is {report.state.label.lower()}: it cannot be submitted now."
        )
    summary, outcomes = (summary or "").strip(), (outcomes or "").strip()
    if len(summary) > MAX_TEXT or len(outcomes) > MAX_TEXT:
        raise ValidationError(f"The summary and the outcomes are {MAX_TEXT:,} characters at most.")
    report.summary, report.outcomes = summary, outcomes
    return REPORT_WORKFLOW.run(session, report, "submit", actor=actor)


#: The decisions on a submitted report.
DECISIONS = ("accept", "return")


def decide_report(
    session: AnySession, report: FinalReport, *, actor: User, action: str, reason: str | None
) -> FinalReport:
    """Program staff (not on the team) accept the report, or return it with the reasons."""
    if action not in DECISIONS:
        raise ValidationError("Choose to accept or return the report.")
    return REPORT_WORKFLOW.run(session, report, action, actor=actor, reason=reason)


def reminder_due(report: FinalReport, today: dt.date) -> str | None:
    """The reminder ``report`` should have had by ``today`` (``30``, ``7``, ``overdue``), if any
    it has not had: each is sent once, and a later one replaces earlier ones never sent."""
    if report.state not in OWED:
        return None
    left = (report.due_on - today).days
    if left < 0:
        threshold = OVERDUE
    else:
        within = [d for d in REMINDER_DAYS if left <= d]
        if not within:
            return None
        threshold = str(min(within))
    sent = (
        REMINDER_ORDER.index(report.last_reminder) if report.last_reminder in REMINDER_ORDER else -1
    )
    return threshold if REMINDER_ORDER.index(threshold) > sent else None


def remind_due(session: AnySession, today: dt.date) -> dict[str, int]:
    """Remind the PI and co-investigators of every report still owed 30 and 7 days before it is
    due and once it is overdue, each once per report (``last_reminder``, moved by a
    compare-and-set, so two sweeps at once remind once)."""
    counts = dict.fromkeys(REMINDER_ORDER, 0)
    horizon = today + dt.timedelta(days=max(REMINDER_DAYS))
    owed = session.scalars(
        select(FinalReport)
        .where(
            FinalReport.state.in_(OWED),
            FinalReport.due_on <= horizon,
            FinalReport.last_reminder.is_distinct_from(OVERDUE),
        )
        .options(selectinload(FinalReport.proposal).selectinload(Proposal.institution))
        .order_by(FinalReport.due_on, FinalReport.id)
    ).all()
    for report in owed:
        threshold = reminder_due(report, today)
        if threshold is None:
            continue
        moved = session.execute(
            update(FinalReport)
            .where(
                FinalReport.id == report.id,
                FinalReport.last_reminder.is_(None)
                if report.last_reminder is None
                else FinalReport.last_reminder == report.last_reminder,
            )
            .values(last_reminder=threshold)
            .execution_options(synchronize_session=False)
        )
        if getattr(moved, "rowcount", 0) != 1:
            continue  # another sweep reminded first
        set_committed_value(report, "last_reminder", threshold)
        emails.report_due(session, report, days=(report.due_on - today).days)
        counts[threshold] += 1
    return counts


def sweep(session: AnySession, today: dt.date | None = None) -> dict[str, int]:
    """Create the report of every active project that has none yet, and send the reminders due.
    Idempotent: run it from cron as often as you like."""
    today = today or utcnow().date()
    missing: Iterable[Proposal] = session.scalars(
        select(Proposal)
        .where(
            Proposal.state == ProposalState.ACTIVE,
            Proposal.start_date.is_not(None),
            Proposal.duration_months.is_not(None),
            Proposal.id.not_in(select(FinalReport.proposal_id)),
        )
        .order_by(Proposal.id)
    ).all()
    created = sum(1 for proposal in missing if ensure_report(session, proposal) is not None)
    counts = {
        "created": created,
        **{f"reminded_{k}": n for k, n in remind_due(session, today).items()},
    }
    if any(counts.values()):
        audit.record(session, "outputs.sweep", actor=None, **counts)
    return counts
