"""Every (state, action) pair of a final report through the shared runner, each action taken by
whom its rule allows (the PI submits, program staff decide), so only the state decides; then the
permission rules per kind of person, and the list filter against the detail rule."""

from __future__ import annotations

import pytest
from sqlalchemy.orm import Session

from portal.auth.models import Role, User
from portal.core.errors import PermissionDeniedError, ValidationError
from portal.outputs import permissions as p
from portal.outputs import services
from portal.outputs.models import FinalReport
from portal.outputs.models import ReportState as R
from portal.outputs.workflow import REPORT_WORKFLOW
from portal.proposals.models import TeamMember, TeamRole
from tests.factories import make_user
from tests.outputs.factories import SUMMARY, make_project, make_report
from tests.support.mail import outbox
from tests.support.visibility import disagreements, recipients_disagree
from tests.support.workflows import assert_declared, assert_step, every_pair

pytestmark = pytest.mark.usefixtures("in_app")

#: The team submits a report while it is due or returned; staff accept it or return it.
REPORTS = {
    (R.DUE, "submit"): R.SUBMITTED,
    (R.RETURNED, "submit"): R.SUBMITTED,
    (R.SUBMITTED, "return"): R.RETURNED,
    (R.SUBMITTED, "accept"): R.ACCEPTED,
}


def test_report_workflow_is_declared() -> None:
    assert_declared(REPORT_WORKFLOW)


def _pi(report: FinalReport) -> User:
    return next(m.user for m in report.proposal.team if m.role == TeamRole.PI)


@pytest.mark.parametrize(("state", "action"), every_pair(R, REPORT_WORKFLOW))
def test_report_transitions(db: Session, state: R, action: str) -> None:
    report = make_report(db, make_project(db), state=state)
    officer = make_user(db, Role.PROGRAM_OFFICER)

    def take() -> object:
        if action == "submit":
            report.summary = SUMMARY
            return REPORT_WORKFLOW.run(db, report, action, actor=_pi(report))
        return REPORT_WORKFLOW.run(db, report, action, actor=officer, reason="Add the papers.")

    assert_step(db, REPORT_WORKFLOW, report, action, REPORTS, take)


def test_each_step_writes_who_and_when_and_tells_the_right_people(db: Session) -> None:
    report = make_report(db, make_project(db))
    pi = _pi(report)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    services.submit_report(db, report, actor=pi, summary=SUMMARY, outcomes="Two papers.")
    assert report.submitted_by_id == pi.id and report.submitted_at is not None
    assert report.summary == SUMMARY
    assert officer.id in {m.recipient_id for m in outbox(db, "outputs/report_submitted")}
    services.decide_report(db, report, actor=officer, action="return", reason="List the papers.")
    assert report.state == R.RETURNED and report.decision_note == "List the papers."
    assert [m.recipient_id for m in outbox(db, "outputs/report_decided")] == [pi.id]
    services.submit_report(db, report, actor=pi, summary=SUMMARY, outcomes="Three papers.")
    services.decide_report(db, report, actor=officer, action="accept", reason=None)
    assert report.state == R.ACCEPTED and report.decided_by_id == officer.id


def test_a_report_needs_a_summary_and_a_return_needs_reasons(db: Session) -> None:
    report = make_report(db, make_project(db))
    with pytest.raises(ValidationError, match="summary"):
        services.submit_report(db, report, actor=_pi(report), summary="Short.", outcomes="")
    db.expire(report, ["state"])
    assert report.state == R.DUE
    submitted = make_report(db, make_project(db), state=R.SUBMITTED)
    with pytest.raises(ValidationError, match="reason"):
        services.decide_report(
            db, submitted, actor=make_user(db, Role.ADMIN), action="return", reason=" "
        )


def test_who_may_submit_and_decide(db: Session) -> None:
    report = make_report(db, make_project(db), state=R.SUBMITTED)
    proposal = report.proposal
    member = make_user(db, Role.RESEARCHER)
    co_pi = make_user(db, Role.RESEARCHER)
    db.add_all(
        [
            TeamMember(proposal_id=proposal.id, user_id=member.id, role=TeamRole.MEMBER),
            TeamMember(proposal_id=proposal.id, user_id=co_pi.id, role=TeamRole.CO_PI),
        ]
    )
    db.flush()
    db.expire(proposal, ["team"])
    officer = make_user(db, Role.PROGRAM_OFFICER)
    staff_on_team = make_user(db, Role.ADMIN)
    db.add(TeamMember(proposal_id=proposal.id, user_id=staff_on_team.id, role=TeamRole.MEMBER))
    db.flush()
    db.expire(proposal, ["team"])
    outsider = make_user(db, Role.RESEARCHER)
    assert p.can_submit_report(_pi(report), report) and p.can_submit_report(co_pi, report)
    assert p.can_submit_report(officer, report)
    assert not p.can_submit_report(member, report) and not p.can_submit_report(outsider, report)
    assert p.can_decide_report(officer, report)
    assert not p.can_decide_report(staff_on_team, report)
    assert not p.can_decide_report(_pi(report), report)
    with pytest.raises(PermissionDeniedError):
        services.decide_report(db, report, actor=staff_on_team, action="accept", reason=None)
    assert {u.id for u in db.scalars(p.report_recipients(report))} == {_pi(report).id, co_pi.id}
    deciders = {u.id for u in db.scalars(p.report_deciders(report))}
    assert officer.id in deciders and staff_on_team.id not in deciders


def test_the_reports_list_shows_what_the_report_page_shows(db: Session) -> None:
    reports = [make_report(db, make_project(db)) for _ in range(3)]
    people = [
        _pi(reports[0]),
        make_user(db, Role.RESEARCHER),
        make_user(db, Role.SIGNING_OFFICIAL, institution=reports[1].proposal.institution),
        make_user(db, Role.PROGRAM_OFFICER),
        make_user(db, Role.REVIEWER),
    ]
    assert disagreements(db, p.visible_reports, p.can_view_report, people, reports) == []
    assert recipients_disagree(db, p.report_deciders, p.can_decide_report, people, reports) == []
