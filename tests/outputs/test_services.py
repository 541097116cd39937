"""Recording releases (every bad field refused with a clear reason, nothing changed; a planned
output checked off once), the final report created for an active project (on approval, and by the
sweep), and the sweep's reminders: 30 and 7 days before the report is due and once overdue, each
once per report however often it runs."""

from __future__ import annotations

import datetime as dt

import pytest
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.auth.models import Role, User
from portal.core import hooks
from portal.core.errors import ConflictError, PermissionDeniedError, ValidationError
from portal.core.models import utcnow
from portal.outputs import services
from portal.outputs.models import FinalReport, ReleasedOutput, ReportState
from portal.proposals.models import OutputKind, Proposal, ProposalState, TeamRole
from tests.factories import make_user
from tests.outputs.factories import make_project, make_release, make_report
from tests.support.mail import outbox

pytestmark = pytest.mark.usefixtures("in_app")


def _pi(proposal: Proposal) -> User:
    return next(m.user for m in proposal.team if m.role == TeamRole.PI)


def good(**over: object) -> dict[str, object]:
    return {
        "kind": OutputKind.CODE,
        "title": "Training code",
        "url": "https://github.com/atom-lab/train",
        "license": "Apache-2.0",
        "doi": None,
        "released_on": dt.date(2026, 6, 1),
        "planned_output_id": None,
        **over,
    }


def test_recording_a_release_checks_off_its_planned_output(db: Session) -> None:
    project = make_project(db, planned=[OutputKind.CODE])
    output = services.record_output(
        db,
        project,
        actor=_pi(project),
        **good(planned_output_id=project.outputs[0].id, doi="https://doi.org/10.5281/zenodo.42"),
    )
    assert output.planned_output_id == project.outputs[0].id
    assert output.doi == "10.5281/zenodo.42"
    with pytest.raises(ValidationError, match="already checks off"):
        services.record_output(
            db, project, actor=_pi(project), **good(planned_output_id=project.outputs[0].id)
        )


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"url": "ftp://example.org/x"}, "web address"),
        ({"url": "javascript:alert(1)"}, "web address"),
        ({"license": "Not-A-Licence"}, "not an SPDX licence"),
        ({"license": "MIT OR"}, "not an SPDX licence expression"),
        ({"doi": "11.1234/x"}, "DOI"),
        ({"released_on": utcnow().date() + dt.timedelta(days=1)}, "future"),
        ({"title": "  "}, "title"),
    ],
)
def test_bad_fields_are_refused_and_nothing_changes(
    db: Session, over: dict[str, object], message: str
) -> None:
    project = make_project(db)
    with pytest.raises(ValidationError, match=message):
        services.record_output(db, project, actor=_pi(project), **good(**over))
    assert db.scalar(select(func.count()).select_from(ReleasedOutput)) == 0


def test_a_planned_output_of_another_project_or_kind_is_refused(db: Session) -> None:
    project, other = make_project(db), make_project(db, planned=[OutputKind.CODE])
    with pytest.raises(ValidationError, match="not one of this project's"):
        services.record_output(
            db, project, actor=_pi(project), **good(planned_output_id=other.outputs[0].id)
        )
    with pytest.raises(ValidationError, match="not code"):
        services.record_output(
            db, project, actor=_pi(project), **good(planned_output_id=project.outputs[0].id)
        )


def test_only_editors_and_staff_record_and_only_on_active_projects(db: Session) -> None:
    project = make_project(db)
    with pytest.raises(PermissionDeniedError):
        services.record_output(db, project, actor=make_user(db, Role.RESEARCHER), **good())
    services.record_output(db, project, actor=make_user(db, Role.PROGRAM_OFFICER), **good())
    draft = make_project(db, state=ProposalState.SUBMITTED)
    with pytest.raises(PermissionDeniedError):
        services.record_output(db, draft, actor=_pi(draft), **good())


def test_editing_and_removing_a_release(db: Session) -> None:
    project = make_project(db, planned=[OutputKind.CODE])
    output = make_release(db, project, planned=project.outputs[0])
    services.update_output(db, output, actor=_pi(project), title="Renamed", planned_output_id=None)
    assert output.title == "Renamed" and output.planned_output_id is None
    services.delete_output(db, output, actor=_pi(project))
    assert db.get(ReleasedOutput, output.id) is None


def test_two_releases_checking_off_one_planned_output_conflict(db: Session) -> None:
    project = make_project(db, planned=[OutputKind.CODE])
    make_release(db, project, planned=project.outputs[0])
    output = make_release(db, project)
    # Past the form and the service's own check (as a concurrent request would be): the unique
    # index refuses it, as a conflict.
    output.planned_output_id = project.outputs[0].id
    with pytest.raises(ConflictError):
        services._flush_unique(db)


def test_an_active_project_owes_a_report_due_at_its_end(db: Session) -> None:
    project = make_project(db, start_date=dt.date(2027, 1, 31), duration_months=13)
    report = services.ensure_report(db, project)
    assert report is not None and report.due_on == dt.date(2028, 2, 29)
    assert report.state == ReportState.DUE
    assert services.ensure_report(db, project) is report
    assert services.ensure_report(db, make_project(db, state=ProposalState.SUBMITTED)) is None
    assert services.on_proposal_approved in hooks._FOLLOW_UPS["proposal.approve"]


def test_the_sweep_creates_missing_reports(db: Session) -> None:
    active = make_project(db)
    make_project(db, state=ProposalState.DECLINED)
    counts = services.sweep(db, dt.date(2026, 1, 1))
    assert counts["created"] == 1
    assert db.scalar(select(FinalReport).where(FinalReport.proposal_id == active.id)) is not None
    assert services.sweep(db, dt.date(2026, 1, 1))["created"] == 0


def test_reminders_are_sent_once_per_threshold(db: Session) -> None:
    due = dt.date(2027, 6, 30)
    report = make_report(db, make_project(db), due_on=due)
    submitted = make_report(db, make_project(db), due_on=due, state=ReportState.SUBMITTED)
    pi = _pi(report.proposal)
    sent: list[tuple[str, int]] = []
    for days_before in (45, 31, 30, 29, 20, 8, 7, 6, 1, 0, -1, -2, -30):
        today = due - dt.timedelta(days=days_before)
        counts = services.remind_due(db, today)
        services.remind_due(db, today)  # again the same day: nothing more
        sent += [(k, days_before) for k, n in counts.items() for _ in range(n)]
    assert sent == [("30", 30), ("7", 7), ("overdue", -1)]
    mails = outbox(db, "outputs/report_due")
    assert [m.recipient_id for m in mails] == [pi.id] * 3
    assert [m.context["days"] for m in mails] == [30, 7, -1]
    assert submitted.last_reminder is None


def test_a_report_created_late_skips_the_reminders_already_past(db: Session) -> None:
    due = dt.date(2027, 6, 30)
    report = make_report(db, make_project(db), due_on=due)
    assert services.remind_due(db, due - dt.timedelta(days=3))["7"] == 1
    assert report.last_reminder == "7"
    assert sum(services.remind_due(db, due - dt.timedelta(days=1)).values()) == 0
