"""E-mails about final reports: a report due (30 and 7 days before the project's end, and once
overdue; to the project's PI and co-investigators), a report submitted (to program staff who may
decide it), and a report accepted or returned with the reasons (to the PI and co-investigators)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from portal.core.models import AnySession
from portal.core.workflow import Step
from portal.notifications.kinds import EmailKind, register_kind
from portal.notifications.rendering import external_url
from portal.notifications.services import enqueue_email
from portal.outputs.models import FinalReport, ReportState
from portal.outputs.permissions import report_deciders, report_recipients

REPORT_DUE = register_kind(
    EmailKind(
        "outputs/report_due",
        "Final reports due",
        "Your project's final report is due in 30 or 7 days, or overdue.",
    )
)
REPORT_SUBMITTED = register_kind(
    EmailKind(
        "outputs/report_submitted",
        "Final reports to decide",
        "A project submitted its final report for program staff to accept or return.",
    )
)
REPORT_DECIDED = register_kind(
    EmailKind(
        "outputs/report_decided",
        "Final report decisions",
        "Program staff accepted your project's final report, or returned it for changes.",
        mandatory=True,
    )
)


def _day(d: dt.date | None) -> str:
    return d.strftime("%d %B %Y") if d else ""


def report_context(report: FinalReport, **extra: Any) -> dict[str, Any]:
    proposal = report.proposal
    return {
        "project": proposal.title,
        "institution": proposal.institution.name,
        "due_on": _day(report.due_on),
        "url": external_url("outputs.report", proposal_id=report.proposal_id),
        "outputs_url": external_url("outputs.index", proposal_id=report.proposal_id),
        **extra,
    }


def report_due(session: AnySession, report: FinalReport, *, days: int) -> None:
    """The PI and co-investigators are reminded: due in ``days`` days (negative: overdue)."""
    enqueue_email(
        session,
        REPORT_DUE.key,
        to=list(session.scalars(report_recipients(report))),
        context=report_context(report, days=days, returned=report.state == ReportState.RETURNED),
    )


def report_submitted(session: AnySession, step: Step[FinalReport, Any]) -> None:
    """Program staff who may decide it hear that a report is in (again, after a return)."""
    report = step.obj
    enqueue_email(
        session,
        REPORT_SUBMITTED.key,
        to=list(session.scalars(report_deciders(report))),
        context=report_context(
            report,
            submitted_by=step.actor.display_name,
            again=step.frm.value == "returned",
            queue_url=external_url("outputs.reports"),
        ),
    )


def report_decided(session: AnySession, step: Step[FinalReport, Any]) -> None:
    """The PI and co-investigators hear the decision, and the reasons of a return."""
    report = step.obj
    enqueue_email(
        session,
        REPORT_DECIDED.key,
        to=list(session.scalars(report_recipients(report))),
        context=report_context(
            report,
            decision=step.action,
            note=step.reason,
            decided_by=step.actor.display_name,
        ),
    )
