"""Two program staff deciding the same final report at the same moment (accept against accept,
accept against return) leave exactly one decision, one audit event and one mail to the team; the
other is told the report was already decided — never a database error. On SQLite and PostgreSQL:
each try makes a fresh report on a live, committed database and releases the two service calls
together in two threads, each in its own session and transaction (a barrier, no sleeps)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy import select

from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.errors import DomainError
from portal.notifications.models import OutboxMessage
from portal.outputs import services
from portal.outputs.models import FinalReport, ReportState
from tests.factories import make_user
from tests.outputs.factories import make_project, make_report
from tests.support.live import live_session
from tests.support.race import CONFLICT_WORDS, TRIES, race, report


def _decide(app: Flask, report_id: int, user_id: int, action: str) -> Callable[[], str]:
    def run() -> str:
        try:
            with live_session(app) as s:
                services.decide_report(
                    s,
                    s.get_one(FinalReport, report_id),
                    actor=s.get_one(User, user_id),
                    action=action,
                    reason="Please list the papers." if action == "return" else None,
                )
        except DomainError as e:
            return f"refused: {e}"
        return "done"

    return run


@pytest.mark.parametrize("second", ["accept", "return"])
def test_two_staff_deciding_one_report_leave_one_decision(race_app: Flask, second: str) -> None:
    broken: dict[int, list[str]] = {}
    for n in range(1, TRIES + 1):
        with live_session(race_app) as s:
            final = make_report(s, make_project(s), state=ReportState.SUBMITTED)
            one, two = make_user(s, Role.PROGRAM_OFFICER), make_user(s, Role.ADMIN)
            ids = (final.id, one.id, two.id)
        report_id, one_id, two_id = ids
        a, b = (
            _decide(race_app, report_id, one_id, "accept"),
            _decide(race_app, report_id, two_id, second),
        )
        results = race(a, b) if n % 2 else race(b, a)[::-1]
        problems: list[str] = []
        done = [r for r in results if r == "done"]
        refused = [r for r in results if r != "done"]
        if len(done) != 1:
            problems.append(f"{len(done)} decisions went through: {results}")
        elif not any(w in refused[0] for w in CONFLICT_WORDS):
            problems.append(f"the other was told {refused[0]!r}")
        with live_session(race_app) as s:
            final = s.get_one(FinalReport, report_id)
            winner = one_id if results[0] == "done" else two_id
            decided = list(
                s.scalars(
                    select(AuditEvent).where(
                        AuditEvent.object_type == "final_reports",
                        AuditEvent.object_id == report_id,
                        AuditEvent.action.in_(["final_report.accept", "final_report.return"]),
                    )
                )
            )
            told = [
                m
                for m in s.scalars(
                    select(OutboxMessage).where(OutboxMessage.template == "outputs/report_decided")
                )
                if str(m.context.get("url", "")).endswith(f"/proposals/{final.proposal_id}/report")
            ]
            expected = (
                ReportState.ACCEPTED
                if winner == one_id or second == "accept"
                else (ReportState.RETURNED)
            )
            if final.decided_by_id != winner or [e.actor_id for e in decided] != [winner]:
                problems.append(f"decided by {final.decided_by_id}; audit {decided}")
            if final.state != expected:
                problems.append(f"the report is {final.state}, not {expected}")
            if len(told) != 1:
                problems.append(f"the team was told {len(told)} times")
        if problems:
            broken[n] = problems
    assert not broken, report(broken)
