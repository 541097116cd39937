"""Decisions on follow-up requests that two people take at the same moment leave one outcome some
serial order explains: two deciders on one request (one decision, one mail, the budget moved once),
a withdrawal against an approval, and two supplements racing for the last hours of a call's budget
(never over: the counters equal the sum of the allocations, and the one that did not fit is
refused with the reason and left waiting).

Each try makes fresh objects and logged-in clients on a live, committed database (SQLite file and
PostgreSQL), releases the two POSTs to the real pages together (a barrier, no sleeps) and reads
what committed.
"""

from __future__ import annotations

from collections.abc import Callable

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.agreements.models import AgreementKind, AgreementState
from portal.allocations import followups
from portal.allocations.models import (
    HOLDING,
    Allocation,
    FollowUpKind,
    FollowUpRequest,
    FollowUpState,
)
from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.errors import ConflictError
from portal.notifications.models import OutboxMessage
from portal.proposals.models import CallResource, Proposal, ProposalState, Resource, TeamRole
from portal.proposals.services import decide_proposal
from tests.factories import (
    make_agreement,
    make_call,
    make_project_allocation,
    make_proposal,
    make_user,
)
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

W = FollowUpState


def events(s: Session, request_id: int, *actions: str) -> list[AuditEvent]:
    return list(
        s.scalars(
            select(AuditEvent)
            .where(
                AuditEvent.object_type == "allocation_requests",
                AuditEvent.object_id == request_id,
                AuditEvent.action.in_(actions),
            )
            .order_by(AuditEvent.id)
        )
    )


def decided_mails(s: Session, request_id: int) -> list[OutboxMessage]:
    return [
        m
        for m in s.scalars(
            select(OutboxMessage).where(OutboxMessage.template == "allocations/request_decided")
        )
        if str(m.context.get("request_url", "")).endswith(f"/allocations/requests/{request_id}")
    ]


def supplement(s: Session, allocation: Allocation, hours: int) -> FollowUpRequest:
    pi = next(m.user for m in allocation.proposal.team if m.role == TeamRole.PI)
    return followups.submit_request(
        s,
        allocation,
        FollowUpKind.SUPPLEMENT,
        actor=pi,
        hours=hours,
        justification="Three more seeds for the ablations.",
    )


def budget_problems(s: Session, call_resource_id: int) -> list[str]:
    """The call's counter and the resource's equal the hours of the allocations holding them, and
    neither is over its limit."""
    cr = s.get(CallResource, call_resource_id)
    assert cr is not None
    resource = s.get(Resource, cr.resource_id)
    assert resource is not None
    held = s.scalar(
        select(func.coalesce(func.sum(Allocation.hours), 0)).where(
            Allocation.call_resource_id == cr.id, Allocation.state.in_(HOLDING)
        )
    )
    problems = []
    if cr.allocated_hours != held or resource.allocated_hours != held:
        problems.append(
            f"counters {cr.allocated_hours} (call) and {resource.allocated_hours} (resource), "
            f"but the allocations hold {held}"
        )
    if cr.allocated_hours > cr.budget_hours:
        problems.append(f"{cr.allocated_hours - cr.budget_hours} GPU-hours over the budget")
    return problems


def test_two_deciders_at_once_leave_one_decision(race_app: Flask) -> None:
    broken: dict[int, list[str]] = {}
    outcomes: dict[str, int] = {}
    for attempt in range(1, TRIES + 1):
        with live_session(race_app) as s:
            allocation = make_project_allocation(s, hours=1000)
            request = supplement(s, allocation, 200)
            approver = make_user(s, Role.PROGRAM_OFFICER)
            decliner = make_user(s, Role.REVIEWER)
            followups.assign_reviewer(
                s, actor=approver, user=decliner, resource=allocation.resource
            )
            ids = (request.id, allocation.id, allocation.call_resource_id, approver.id, decliner.id)
        request_id, allocation_id, cr_id, approver_id, decliner_id = ids
        approves = logged_in_client(race_app, approver_id)
        declines = logged_in_client(race_app, decliner_id)
        url = f"/allocations/requests/{request_id}/decide"

        a = post(approves, url, action="approve", reason="Within the plan.")
        b = post(declines, url, action="decline", reason="The budget is kept for new projects.")
        if attempt % 2:
            approved, declined = race(a, b)
        else:
            declined, approved = race(b, a)

        problems = redirects(approver=approved, decliner=declined)
        with live_session(race_app) as s:
            req = s.get(FollowUpRequest, request_id)
            alloc = s.get(Allocation, allocation_id)
            assert req is not None and alloc is not None
            state, decider, hours = req.state, req.decided_by_id, alloc.hours
            decisions = events(
                s, request_id, "allocation_request.approve", "allocation_request.decline"
            )
            mailed = decided_mails(s, request_id)
            problems += budget_problems(s, cr_id)
        outcomes[state.value] = outcomes.get(state.value, 0) + 1
        expected = {W.APPROVED: (approver_id, 1200), W.DECLINED: (decliner_id, 1000)}.get(state)
        if expected is None:
            problems.append(f"the request is {state.value}")
        elif (decider, hours) != expected:
            problems.append(f"{state.value} by {decider}, the allocation has {hours} GPU-hours")
        if [e.actor_id for e in decisions] != [decider]:
            problems.append(f"decided by {decider}, the audit log says {decisions}")
        if len(mailed) != 1:
            problems.append(f"the PI was told {len(mailed)} times")
        if not problems:
            approver_side, decliner_side = (approves, approved), (declines, declined)
            if state == W.APPROVED:
                problems += who_was_told_what(winner=approver_side, loser=decliner_side)
            else:
                problems += who_was_told_what(winner=decliner_side, loser=approver_side)
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken) + f"\noutcomes: {outcomes}"


def test_a_withdrawal_and_an_approval_at_once_leave_one_outcome(race_app: Flask) -> None:
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        with live_session(race_app) as s:
            allocation = make_project_allocation(s, hours=1000)
            request = supplement(s, allocation, 200)
            pi = request.requested_by_id
            officer = make_user(s, Role.ADMIN)
            ids = (request.id, allocation.call_resource_id, pi or 0, officer.id)
        request_id, cr_id, pi_id, officer_id = ids
        withdraws = logged_in_client(race_app, pi_id)
        approves = logged_in_client(race_app, officer_id)

        w = post(withdraws, f"/allocations/requests/{request_id}/withdraw")
        a = post(approves, f"/allocations/requests/{request_id}/decide", action="approve")
        if attempt % 2:
            withdrawn, approved = race(w, a)
        else:
            approved, withdrawn = race(a, w)

        problems = redirects(pi=withdrawn, officer=approved)
        with live_session(race_app) as s:
            req = s.get(FollowUpRequest, request_id)
            assert req is not None
            state = req.state
            steps = [
                e.action
                for e in events(
                    s, request_id, "allocation_request.approve", "allocation_request.withdraw"
                )
            ]
            problems += budget_problems(s, cr_id)
        expected = {
            W.APPROVED: ["allocation_request.approve"],
            W.WITHDRAWN: ["allocation_request.withdraw"],
        }.get(state)
        if steps != expected:
            problems.append(f"the request is {state.value}; the audit log says {steps}")
        elif not problems:
            if state == W.APPROVED:
                problems += who_was_told_what(
                    winner=(approves, approved), loser=(withdraws, withdrawn)
                )
            else:
                problems += who_was_told_what(
                    winner=(withdraws, withdrawn), loser=(approves, approved)
                )
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken)


def test_two_supplements_racing_for_the_last_hours_never_overspend(race_app: Flask) -> None:
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        with live_session(race_app) as s:
            call = make_call(s, budget_hours=2000, max_request_hours=1000)
            first = make_project_allocation(s, call=call, hours=800)
            second = make_project_allocation(s, call=call, hours=800)
            # 400 GPU-hours are left: each request fits alone, not both.
            one, two = supplement(s, first, 300), supplement(s, second, 300)
            officers = make_user(s, Role.PROGRAM_OFFICER), make_user(s, Role.ADMIN)
            ids = (one.id, two.id, first.call_resource_id, officers[0].id, officers[1].id)
        one_id, two_id, cr_id, first_officer, second_officer = ids
        by_first = logged_in_client(race_app, first_officer)
        by_second = logged_in_client(race_app, second_officer)

        a = post(by_first, f"/allocations/requests/{one_id}/decide", action="approve")
        b = post(by_second, f"/allocations/requests/{two_id}/decide", action="approve")
        if attempt % 2:
            first_resp, second_resp = race(a, b)
        else:
            second_resp, first_resp = race(b, a)

        problems = redirects(first=first_resp, second=second_resp)
        with live_session(race_app) as s:
            states = [s.get(FollowUpRequest, i).state for i in (one_id, two_id)]  # type: ignore[union-attr]
            problems += budget_problems(s, cr_id)
            cr = s.get(CallResource, cr_id)
            assert cr is not None
            allocated = cr.allocated_hours
        if sorted(states) != sorted([W.APPROVED, W.SUBMITTED]):
            problems.append(f"the requests are {[x.value for x in states]}")
        if allocated != 1900:
            problems.append(f"{allocated} GPU-hours of the call's budget are allocated")
        if not problems:
            sides = [(by_first, first_resp), (by_second, second_resp)]
            winner, loser = sides if states[0] == W.APPROVED else sides[::-1]
            if not was_told_success(told(*winner)):
                problems.append("the approver whose hours fit was not told")
            refused = told(*loser)
            if not any("do not fit" in text for category, text in refused if category == "danger"):
                problems.append(f"the other approver was told {refused}")
            if was_told_conflict(refused):
                problems.append("the other approver was told of a conflict, not of the budget")
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken)


#: Threads in the mixed test: half approve projects' awards, half approve supplements.
THREADS = 24


def approving_supplement(app: Flask, request_id: int, officer_id: int) -> Callable[[], str]:
    """A program officer's approval of a supplement in a transaction of its own: whether it was
    approved or refused (the budget, or a concurrent change)."""

    def run() -> str:
        try:
            with live_session(app) as s:
                request, officer = s.get(FollowUpRequest, request_id), s.get(User, officer_id)
                assert request is not None and officer is not None
                followups.decide_request(s, request, "approve", actor=officer)
        except ConflictError:
            return "refused"
        return "approved"

    return run


def approving_project(
    app: Flask, proposal_id: int, cr_id: int, officer_id: int
) -> Callable[[], str]:
    """A program officer's approval of a project with 400 GPU-hours awarded, likewise."""

    def run() -> str:
        try:
            with live_session(app) as s:
                proposal, officer = s.get(Proposal, proposal_id), s.get(User, officer_id)
                assert proposal is not None and officer is not None
                decide_proposal(s, proposal, "approve", actor=officer, awards={cr_id: 400})
        except ConflictError:
            return "refused"
        return "approved"

    return run


def test_24_approvals_of_awards_and_supplements_never_overspend_the_budget(
    race_app: Flask,
) -> None:
    """Twelve projects approved and twelve supplements approved at once, against one call's
    budget that holds less than half of what they ask: nothing over, the counters equal the sum
    of the allocations, every try."""
    broken: dict[int, list[str]] = {}
    for attempt in range(1, 4):
        with live_session(race_app) as s:
            call = make_call(s, budget_hours=10_000, max_request_hours=1000)
            cr_id = call.resources[0].id
            requests = [
                supplement(s, make_project_allocation(s, call=call, hours=500), 300).id
                for _ in range(THREADS // 2)
            ]  # 6,000 GPU-hours allocated, 4,000 left; 3,600 asked for in supplements
            proposals = []
            for _ in range(THREADS // 2):  # and 4,800 by new projects
                proposal = make_proposal(s, call=call, state=ProposalState.IN_REVIEW)
                proposal.requests[0].hours = 400
                make_agreement(
                    s,
                    kind=AgreementKind.CONTRIBUTION,
                    proposal=proposal,
                    state=AgreementState.ACTIVE,
                )
                proposals.append(proposal.id)
            officer_ids = [make_user(s, Role.PROGRAM_OFFICER).id for _ in range(THREADS)]

        actions = [
            approving_supplement(race_app, r, o)
            for r, o in zip(requests, officer_ids[::2], strict=True)
        ] + [
            approving_project(race_app, p, cr_id, o)
            for p, o in zip(proposals, officer_ids[1::2], strict=True)
        ]
        results = race(*actions)

        with live_session(race_app) as s:
            problems = budget_problems(s, cr_id)
            cr = s.get(CallResource, cr_id)
            assert cr is not None
            granted = 300 * results[: THREADS // 2].count("approved") + 400 * results[
                THREADS // 2 :
            ].count("approved")
            if cr.allocated_hours != 6000 + granted:
                problems.append(f"{cr.allocated_hours} allocated, {6000 + granted} granted")
            if cr.budget_hours - cr.allocated_hours >= 300:
                problems.append(f"{cr.budget_hours - cr.allocated_hours} left, yet one refused")
        if problems:
            broken[attempt] = problems

    assert not broken, report(broken)
