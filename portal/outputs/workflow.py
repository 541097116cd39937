"""Which state may follow which for a project's final report, who takes each step, and what each
step tells whom.

Report: due → submitted (by the PI, a co-investigator or program staff) → accepted, or returned
with reasons (program staff not on the team) → submitted again.
"""

from __future__ import annotations

from typing import Any

from portal.core.errors import ValidationError
from portal.core.models import utcnow
from portal.core.workflow import Step, Transition, Workflow
from portal.outputs import emails, permissions
from portal.outputs.models import FinalReport
from portal.outputs.models import ReportState as R

#: Shortest summary accepted: a sentence or two about what the project did.
MIN_SUMMARY = 50

REPORT_TRANSITIONS: dict[str, Transition[R]] = {
    "submit": Transition(frozenset({R.DUE, R.RETURNED}), R.SUBMITTED, "Submit the report"),
    "return": Transition(
        frozenset({R.SUBMITTED}),
        R.RETURNED,
        "Return for changes",
        needs_reason=True,
        style="warning",
    ),
    "accept": Transition(frozenset({R.SUBMITTED}), R.ACCEPTED, "Accept", style="success"),
}


def _report_fields(step: Step[FinalReport, R]) -> dict[str, Any]:
    now = utcnow()
    out: dict[str, Any] = {"state_changed_at": now}
    if step.action == "submit":
        out |= {"submitted_at": now, "submitted_by_id": step.actor.id}
    else:
        out |= {"decided_at": now, "decided_by_id": step.actor.id, "decision_note": step.reason}
    return out


def _complete(step: Step[FinalReport, R]) -> None:
    """A report says what the project did: its summary is filled in (the service writes the text
    the team sent before it submits)."""
    if len((step.obj.summary or "").strip()) < MIN_SUMMARY:
        raise ValidationError(
            f"The summary needs at least {MIN_SUMMARY} characters: what did the project do?"
        )


REPORT_WORKFLOW: Workflow[FinalReport, R] = Workflow(
    name="final_report",
    noun="report",
    model=FinalReport,
    transitions=REPORT_TRANSITIONS,
    permissions={
        "submit": permissions.can_submit_report,
        "return": permissions.can_decide_report,
        "accept": permissions.can_decide_report,
    },
    mails={
        "submit": emails.report_submitted,
        "return": emails.report_decided,
        "accept": emails.report_decided,
    },
    silent=frozenset(),
    fields=_report_fields,
    checks={"submit": _complete},
)
