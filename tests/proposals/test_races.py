"""Two people deciding one proposal at the same moment leave exactly one decision: two signing
officials (one endorsing, one returning), and the PI pressing "Submit" twice at once.

Each try makes fresh objects and logged-in clients on a live, committed database (SQLite file and
PostgreSQL), releases the two POSTs together (a barrier, no sleeps) and reads what committed.
"""

from __future__ import annotations

from flask import Flask
from sqlalchemy import select

from portal.auth.models import Role
from portal.core.audit import AuditEvent
from portal.notifications.models import OutboxMessage
from portal.proposals.models import Proposal, ProposalState, ProposalVersion
from tests.factories import make_institution, make_proposal, make_user
from tests.support.live import live_session, logged_in_client
from tests.support.race import (
    TRIES,
    post,
    race,
    redirects,
    report,
    told,
    was_told_conflict,
    was_told_success,
    who_was_told_what,
)


def test_two_officials_endorsing_and_returning_leave_exactly_one_decision(
    race_app: Flask,
) -> None:
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        with live_session(race_app) as s:
            inst = make_institution(s)
            endorser = make_user(s, Role.SIGNING_OFFICIAL, institution=inst)
            returner = make_user(s, Role.SIGNING_OFFICIAL, institution=inst)
            pi = make_user(s, Role.RESEARCHER, institution=inst)
            proposal = make_proposal(s, pi=pi, state=ProposalState.AWAITING_ENDORSEMENT)
            proposal_id, pi_id = proposal.id, pi.id
            endorser_id, returner_id = endorser.id, returner.id
        endorsing = logged_in_client(race_app, endorser_id)
        returning = logged_in_client(race_app, returner_id)
        url = f"/proposals/{proposal_id}/endorsement"

        endorse = post(endorsing, url, action="endorse")
        send_back = post(returning, url, action="return", reason="Add the support letter")
        if attempt % 2:
            endorsed, returned = race(endorse, send_back)
        else:
            returned, endorsed = race(send_back, endorse)

        problems = redirects(endorser=endorsed, returner=returned)
        with live_session(race_app) as s:
            p = s.get(Proposal, proposal_id)
            assert p is not None
            state, decided_by = p.state, p.endorsed_by_id
            decisions = s.scalars(
                select(AuditEvent.action)
                .where(
                    AuditEvent.object_type == "proposals",
                    AuditEvent.object_id == proposal_id,
                    AuditEvent.action.in_(["proposal.endorse", "proposal.return"]),
                )
                .order_by(AuditEvent.id)
            ).all()
            mails = s.scalars(
                select(OutboxMessage.template).where(
                    OutboxMessage.recipient_id == pi_id,
                    OutboxMessage.template.in_(["proposals/submitted", "proposals/returned"]),
                )
            ).all()

        expected = {
            ProposalState.SUBMITTED: (["proposal.endorse"], ["proposals/submitted"], endorser_id),
            ProposalState.RETURNED: (["proposal.return"], ["proposals/returned"], returner_id),
        }.get(state)
        if expected is None:
            problems.append(f"the proposal is {state.value}, not decided")
        else:
            if decisions != expected[0]:
                problems.append(f"state {state.value} but audit log says {decisions}")
            if sorted(mails) != expected[1]:
                problems.append(f"state {state.value} but the PI got {mails}")
            if decided_by != expected[2]:
                problems.append(f"state {state.value} but decided by user {decided_by}")
            if not any(p.endswith("redirect") for p in problems):
                by_endorser, by_returner = (endorsing, endorsed), (returning, returned)
                if state == ProposalState.SUBMITTED:
                    problems += who_was_told_what(winner=by_endorser, loser=by_returner)
                else:
                    problems += who_was_told_what(winner=by_returner, loser=by_endorser)
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken)


def test_submitting_twice_at_once_freezes_one_version(race_app: Flask) -> None:
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        with live_session(race_app) as s:
            proposal = make_proposal(s, complete=True)
            proposal_id = proposal.id
            pi_id = proposal.pi.id if proposal.pi else 0
        first = logged_in_client(race_app, pi_id)
        second = logged_in_client(race_app, pi_id)
        url = f"/proposals/{proposal_id}/submit"

        one, two = race(post(first, url), post(second, url))

        problems = redirects(first=one, second=two)
        with live_session(race_app) as s:
            p = s.get(Proposal, proposal_id)
            assert p is not None
            versions = s.scalars(
                select(ProposalVersion.number).where(ProposalVersion.proposal_id == proposal_id)
            ).all()
            events = s.scalars(
                select(AuditEvent.id).where(
                    AuditEvent.object_type == "proposals",
                    AuditEvent.object_id == proposal_id,
                    AuditEvent.action == "proposal.submit_for_endorsement",
                )
            ).all()
            state, version = p.state, p.version
        if state != ProposalState.AWAITING_ENDORSEMENT:
            problems.append(f"the proposal is {state.value}")
        if list(versions) != [1] or version != 1:
            problems.append(f"versions {list(versions)}, proposal says {version}")
        if len(events) != 1:
            problems.append(f"{len(events)} submissions in the audit log")
        if not any(p.endswith("redirect") for p in problems):
            told_one, told_two = told(first, one), told(second, two)
            successes = [was_told_success(told_one), was_told_success(told_two)]
            if sorted(successes) != [False, True]:
                problems.append(f"told {told_one} and {told_two}")
            elif not was_told_conflict(told_two if successes[0] else told_one):
                problems.append("the second press was not told it was already submitted")
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken)
