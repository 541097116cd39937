"""A reviewer accepting while program staff withdraw the same assignment at the same moment leaves
an outcome some serial order explains — the officer's withdrawal refused because the
reviewer accepted first, the acceptance refused because the assignment was withdrawn first, or
both one after the other — never a lost or doubled change, each step audited once, on SQLite and
PostgreSQL (fresh objects each try,
the two POSTs released together by a barrier)."""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from portal.auth.models import Role
from portal.core.audit import AuditEvent
from portal.proposals.models import ProposalState
from portal.reviews.models import Assignment, AssignmentState
from tests.factories import make_assignment, make_proposal, make_reviewer, make_user
from tests.support.live import live_session, logged_in_client
from tests.support.race import (
    TRIES,
    post,
    race,
    redirects,
    report,
    told,
    was_told_success,
    who_was_told_what,
)


def test_accepting_while_staff_withdraw_leaves_exactly_one_outcome(race_app: Flask) -> None:
    broken: dict[int, list[str]] = {}
    outcomes: dict[tuple[str, ...], int] = {}
    for attempt in range(1, TRIES + 1):
        with live_session(race_app) as s:
            officer = make_user(s, Role.PROGRAM_OFFICER)
            reviewer = make_reviewer(s)
            proposal = make_proposal(s, state=ProposalState.IN_REVIEW)
            assignment = make_assignment(s, proposal=proposal, reviewer=reviewer)
            assignment_id, officer_id, reviewer_id = assignment.id, officer.id, reviewer.id
        accepting = logged_in_client(race_app, reviewer_id)
        removing = logged_in_client(race_app, officer_id)
        url = f"/reviews/assignments/{assignment_id}/answer"

        accept = post(accepting, url, action="accept")
        remove = post(removing, url, action="remove")
        if attempt % 2:
            accepted, removed = race(accept, remove)
        else:
            removed, accepted = race(remove, accept)

        problems = redirects(reviewer=accepted, officer=removed)
        with live_session(race_app) as s:
            a = s.get(Assignment, assignment_id)
            assert a is not None
            state = a.state
            events = s.scalars(
                select(AuditEvent)
                .where(
                    AuditEvent.object_type == "assignments",
                    AuditEvent.object_id == assignment_id,
                    AuditEvent.action.in_(["assignment.accept", "assignment.remove"]),
                )
                .order_by(AuditEvent.id)
            ).all()
        # Withdrawing an accepted assignment is allowed, so both may succeed one after the
        # other; what must never happen is a lost or doubled change: the audit trail is one
        # chain of steps from "invited" to the state that committed, each step taken once.
        steps = [(e.action, e.details["frm"], e.details["to"]) for e in events]
        chain = [frm for _, frm, _ in steps] + [state.value]
        if (
            not steps
            or chain[0] != "invited"
            or any(to != chain[i + 1] for i, (_, _, to) in enumerate(steps))
        ):
            problems.append(f"state {state.value} but the audit log says {steps}")
        elif len({a for a, _, _ in steps}) != len(steps):
            problems.append(f"an action was taken twice: {steps}")
        elif not any(p.endswith("redirect") for p in problems):
            by_reviewer, by_officer = (accepting, accepted), (removing, removed)
            if len(steps) == 2:  # one after the other: both were told it was done
                if not (
                    was_told_success(told(*by_reviewer)) and was_told_success(told(*by_officer))
                ):
                    problems.append("both steps were taken but someone was told otherwise")
            elif state == AssignmentState.ACCEPTED:
                problems += who_was_told_what(winner=by_reviewer, loser=by_officer)
            else:
                problems += who_was_told_what(winner=by_officer, loser=by_reviewer)
        outcomes[tuple(a for a, _, _ in steps)] = outcomes.get(tuple(a for a, _, _ in steps), 0) + 1
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken) + f"\noutcomes: {outcomes}"
