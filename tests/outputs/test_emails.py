"""The final report's mails render (subject, text, HTML) with what each reader needs: when it is
due and where to write it; who submitted it and where to decide; the decision and the reasons."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy.orm import Session

from portal.auth.models import Role
from portal.outputs import services
from portal.outputs.models import ReportState
from portal.proposals.models import TeamRole
from tests.factories import make_user
from tests.outputs.factories import SUMMARY, make_project, make_report
from tests.support.mail import outbox, rendered

pytestmark = [pytest.mark.once, pytest.mark.usefixtures("in_app")]


def test_the_report_mails_render(db: Session) -> None:
    project = make_project(db, title="Open reasoning models")
    pi = next(m.user for m in project.team if m.role == TeamRole.PI)
    officer = make_user(db, Role.PROGRAM_OFFICER, display_name="Olga Officer")
    report = make_report(db, project, due_on=dt.date(2027, 6, 30))
    services.remind_due(db, dt.date(2027, 6, 23))
    services.remind_due(db, dt.date(2027, 7, 1))
    services.submit_report(db, report, actor=pi, summary=SUMMARY, outcomes="")
    services.decide_report(db, report, actor=officer, action="return", reason="List the papers.")
    assert report.state == ReportState.RETURNED
    due, overdue = (rendered(m) for m in outbox(db, "outputs/report_due"))
    assert "Subject: Final report due in 7 days: Open reasoning models" in due
    assert "30 June 2027" in due and "/report" in due
    assert "Subject: Final report overdue: Open reasoning models" in overdue
    submitted = rendered(outbox(db, "outputs/report_submitted")[0])
    assert "Subject: Final report submitted: Open reasoning models" in submitted
    assert "/reports/" in submitted
    decided = rendered(outbox(db, "outputs/report_decided")[0])
    assert "Subject: Final report returned for changes: Open reasoning models" in decided
    assert "Olga Officer" in decided and "List the papers." in decided
