"""Follow-up requests on allocations: every (state, action) pair through the shared runner; what
each kind does to the allocation and the budgets (more hours taken from the call's budget and
the resource, or refused with the reason and nothing changed; more time, bounded; a renewal
linked to the old allocation; hours given back freed at once, never below what was used); who
may ask, who may decide (program staff, allocation reviewers within their ceiling, never on their
own project), and that the lists and mails follow the same rules."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.allocations import followups
from portal.allocations.followups import (
    FOLLOW_UP_WORKFLOW,
    assign_reviewer,
    decide_request,
    submit_request,
    unassign_reviewer,
    withdraw_request,
)
from portal.allocations.models import (
    MAX_EXTENSION_MONTHS,
    SECONDS_PER_HOUR,
    Allocation,
    AllocationReviewer,
    AllocationState,
    FollowUpKind,
    FollowUpRequest,
)
from portal.allocations.models import FollowUpState as W
from portal.allocations.permissions import (
    can_decide_follow_up,
    can_view_follow_up,
    deciders_of_request,
    requests_to_decide,
    visible_follow_ups,
)
from portal.allocations.services import charge
from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.dates import add_months
from portal.core.errors import (
    ConflictError,
    PermissionDeniedError,
    ValidationError,
)
from portal.core.models import utcnow
from portal.notifications.models import SentReminder
from portal.notifications.rendering import render_email
from portal.proposals.models import Call, TeamMember, TeamRole
from tests.factories import make_call, make_project_allocation, make_user
from tests.support.mail import outbox
from tests.support.visibility import disagreements, recipients_disagree
from tests.support.workflows import assert_declared, assert_step, every_pair

K = FollowUpKind

#: Requests: one waiting for a decision is approved, declined or withdrawn; hours given back are
#: freed by the PI's own step. Nothing follows a decision.
TABLE = {
    (W.SUBMITTED, "approve"): W.APPROVED,
    (W.SUBMITTED, "decline"): W.DECLINED,
    (W.SUBMITTED, "withdraw"): W.WITHDRAWN,
    (W.SUBMITTED, "give_back"): W.APPROVED,
}

WHY = "The ablations need three more seeds than planned."


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    """Steps write e-mails to the outbox (with links)."""
    with app.app_context():
        yield


def pi_of(allocation: Allocation) -> User:
    return next(m.user for m in allocation.proposal.team if m.role == TeamRole.PI)


def budget_of(db: Session, allocation: Allocation) -> tuple[int, int]:
    """(GPU-hours allocated of the call's budget on the resource, of the resource's capacity)."""
    db.expire_all()
    cr = allocation.call_resource
    return cr.allocated_hours, cr.resource.allocated_hours


def events(db: Session, obj: Any, action: str) -> list[AuditEvent]:
    return list(
        db.scalars(
            select(AuditEvent).where(
                AuditEvent.object_type == obj.__tablename__,
                AuditEvent.object_id == obj.id,
                AuditEvent.action == action,
            )
        )
    )


def make_request(
    db: Session,
    allocation: Allocation,
    *,
    kind: FollowUpKind = K.SUPPLEMENT,
    state: W = W.SUBMITTED,
    hours: int = 100,
) -> FollowUpRequest:
    """A request of ``kind`` by the PI in ``state`` (a decided one decided now by a program
    officer), written directly: for the table, which needs every state of every kind."""
    pi = pi_of(allocation)
    request = FollowUpRequest(
        allocation=allocation,
        kind=kind,
        state=state,
        requested_by_id=pi.id,
        hours=None if kind == K.EXTENSION else hours,
        ends_on=allocation.ends_on + dt.timedelta(days=30) if kind == K.EXTENSION else None,
        months=6 if kind == K.RENEWAL else None,
        justification=WHY,
    )
    if state in (W.APPROVED, W.DECLINED):
        request.decided_at = utcnow()
        request.decided_by_id = make_user(db, Role.PROGRAM_OFFICER).id
    db.add(request)
    db.flush()
    return request


def refused(db: Session, change: Any) -> Exception:
    """Run ``change`` as a request would, rolled back when refused (the view rolls back): the
    refusal it raised."""
    try:
        with db.begin_nested():
            change()
    except Exception as e:
        db.expire_all()
        return e
    raise AssertionError("the change was not refused")


# --- the table ---------------------------------------------------------------------------------


def test_workflow_names_the_same_actions_everywhere() -> None:
    assert_declared(FOLLOW_UP_WORKFLOW)


@pytest.mark.parametrize(("state", "action"), every_pair(W, FOLLOW_UP_WORKFLOW))
def test_request_transition_table(db: Session, state: W, action: str) -> None:
    """Each action is taken by someone its rule allows (a program officer decides, the PI
    withdraws or gives hours back), so only the state decides."""
    allocation = make_project_allocation(db)
    pi = pi_of(allocation)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    request = make_request(
        db, allocation, kind=K.RETURN if action == "give_back" else K.SUPPLEMENT, state=state
    )

    def take() -> object:
        if action in ("approve", "decline"):
            return decide_request(db, request, action, actor=officer, note="Fits the plan.")
        if action == "withdraw":
            return withdraw_request(db, request, actor=pi)
        return FOLLOW_UP_WORKFLOW.run(db, request, action, actor=pi)

    assert_step(db, FOLLOW_UP_WORKFLOW, request, action, TABLE, take)
    if (state, action) in TABLE and action != "withdraw":
        assert request.decided_at is not None
        assert request.decided_by_id == (pi.id if action == "give_back" else officer.id)
        assert request.decision_note == (None if action == "give_back" else "Fits the plan.")


def test_a_decline_needs_a_reason(db: Session) -> None:
    allocation = make_project_allocation(db)
    request = submit_request(
        db, allocation, K.SUPPLEMENT, actor=pi_of(allocation), hours=100, justification=WHY
    )
    officer = make_user(db, Role.PROGRAM_OFFICER)
    with pytest.raises(ValidationError, match="reason"):
        decide_request(db, request, "decline", actor=officer, note="  ")
    assert request.state == W.SUBMITTED
    decide_request(
        db, request, "decline", actor=officer, note="The call's budget is kept for new projects."
    )
    assert request.state == W.DECLINED
    assert request.decision_note == "The call's budget is kept for new projects."
    assert budget_of(db, allocation) == (1000, 1000)


# --- more hours --------------------------------------------------------------------------------


def test_approved_hours_come_from_the_calls_budget_and_the_resource(db: Session) -> None:
    allocation = make_project_allocation(db, hours=1000)
    pi = pi_of(allocation)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    request = submit_request(db, allocation, K.SUPPLEMENT, actor=pi, hours=250, justification=WHY)
    (asked,) = [
        m for m in outbox(db, "allocations/request_submitted") if m.recipient_id == officer.id
    ]
    assert asked.context["request_url"].endswith(f"/allocations/requests/{request.id}")
    assert budget_of(db, allocation) == (1000, 1000)  # asking takes nothing

    decide_request(db, request, "approve", actor=officer, note="Within the plan.")
    db.expire_all()
    assert request.state == W.APPROVED and allocation.hours == 1250
    assert budget_of(db, allocation) == (1250, 1250)
    (told,) = outbox(db, "allocations/request_decided")
    assert told.recipient_id == pi.id and told.context["hours"] == 1250
    text = render_email(told).text
    assert "250 more GPU-hours" in text and "now has 1,250 GPU-hours" in text
    assert "Within the plan." in text
    assert [e.actor_id for e in events(db, request, "allocation_request.approve")] == [officer.id]


def test_hours_for_a_used_up_allocation_make_it_active_again(db: Session) -> None:
    allocation = make_project_allocation(db, hours=100)
    charge(db, allocation, 100 * SECONDS_PER_HOUR)
    assert allocation.state == AllocationState.EXHAUSTED
    request = submit_request(
        db, allocation, K.SUPPLEMENT, actor=pi_of(allocation), hours=50, justification=WHY
    )
    decide_request(db, request, "approve", actor=make_user(db, Role.PROGRAM_OFFICER))
    db.expire_all()
    assert allocation.state == AllocationState.ACTIVE and allocation.hours == 150
    (replenished,) = events(db, allocation, "allocation.replenish")
    assert replenished.details["frm"] == "exhausted" and replenished.details["to"] == "active"
    assert any(m.context.get("again") for m in outbox(db, "allocations/ready"))


def test_hours_that_do_not_fit_refuse_the_approval_and_change_nothing(db: Session) -> None:
    call = make_call(db, budget_hours=1500, max_request_hours=1000)
    allocation = make_project_allocation(db, call=call, hours=1000)
    request = submit_request(
        db, allocation, K.SUPPLEMENT, actor=pi_of(allocation), hours=600, justification=WHY
    )
    officer = make_user(db, Role.PROGRAM_OFFICER)

    error = refused(db, lambda: decide_request(db, request, "approve", actor=officer))
    assert isinstance(error, ConflictError)
    assert "has 500 GPU-hours left; 600 do not fit" in str(error)
    assert request.state == W.SUBMITTED and request.decided_at is None
    assert allocation.hours == 1000 and budget_of(db, allocation) == (1000, 1000)
    assert events(db, request, "allocation_request.approve") == []
    assert outbox(db, "allocations/request_decided") == []


def test_the_resources_capacity_bounds_the_hours_too(db: Session) -> None:
    allocation = make_project_allocation(db, hours=1000)
    resource = allocation.resource
    resource.capacity_hours = 1100
    db.flush()
    request = submit_request(
        db, allocation, K.SUPPLEMENT, actor=pi_of(allocation), hours=200, justification=WHY
    )
    error = refused(
        db, lambda: decide_request(db, request, "approve", actor=make_user(db, Role.ADMIN))
    )
    assert "has 100 GPU-hours of capacity left" in str(error)
    assert budget_of(db, allocation) == (1000, 1000) and request.state == W.SUBMITTED


def test_more_hours_than_one_project_may_ask_for_are_refused(db: Session) -> None:
    call = make_call(db, budget_hours=100_000, max_request_hours=1000)
    allocation = make_project_allocation(db, call=call, hours=500)
    with pytest.raises(ValidationError, match="between 1 and 1,000 GPU-hours"):
        submit_request(
            db, allocation, K.SUPPLEMENT, actor=pi_of(allocation), hours=1001, justification=WHY
        )


def test_hours_are_not_granted_to_an_allocation_suspended_meanwhile(db: Session) -> None:
    allocation = make_project_allocation(db)
    request = submit_request(
        db, allocation, K.SUPPLEMENT, actor=pi_of(allocation), hours=10, justification=WHY
    )
    allocation.state = AllocationState.SUSPENDED
    db.flush()
    error = refused(
        db, lambda: decide_request(db, request, "approve", actor=make_user(db, Role.ADMIN))
    )
    assert isinstance(error, ConflictError) and "suspended" in str(error)
    assert budget_of(db, allocation) == (1000, 1000)


# --- more time ---------------------------------------------------------------------------------


def test_an_extension_moves_the_end_and_the_end_reminders_with_it(db: Session) -> None:
    allocation = make_project_allocation(db)
    old_end = allocation.ends_on
    db.add(SentReminder(rule="allocations.ends_30", object_id=allocation.id, period="once"))
    db.add(SentReminder(rule="allocations.used_80", object_id=allocation.id, period="once"))
    db.flush()
    new_end = add_months(old_end, 3)
    request = submit_request(
        db, allocation, K.EXTENSION, actor=pi_of(allocation), ends_on=new_end, justification=WHY
    )
    assert request.hours is None and request.hours_asked == 0
    decide_request(db, request, "approve", actor=make_user(db, Role.PROGRAM_OFFICER))
    db.expire_all()
    assert allocation.ends_on == new_end and allocation.hours == 1000
    assert budget_of(db, allocation) == (1000, 1000)
    left = db.scalars(select(SentReminder.rule).where(SentReminder.object_id == allocation.id))
    assert set(left) == {"allocations.used_80"}


@pytest.mark.parametrize(
    "ends_on",
    [
        lambda end: end,
        lambda end: end - dt.timedelta(days=1),
        lambda end: add_months(end, MAX_EXTENSION_MONTHS) + dt.timedelta(days=1),
    ],
    ids=["the same end", "an earlier end", "more than twelve months more"],
)
def test_an_extension_is_bounded(db: Session, ends_on: Any) -> None:
    allocation = make_project_allocation(db)
    with pytest.raises(ValidationError, match="Choose a new end date after"):
        submit_request(
            db,
            allocation,
            K.EXTENSION,
            actor=pi_of(allocation),
            ends_on=ends_on(allocation.ends_on),
            justification=WHY,
        )


# --- renewal -----------------------------------------------------------------------------------


def test_a_renewal_is_a_new_allocation_linked_to_the_old_on_the_same_budget(db: Session) -> None:
    allocation = make_project_allocation(db, hours=1000)
    pi = pi_of(allocation)
    request = submit_request(
        db, allocation, K.RENEWAL, actor=pi, hours=800, months=6, justification=WHY
    )
    officer = make_user(db, Role.PROGRAM_OFFICER)
    decide_request(db, request, "approve", actor=officer, note="Reviewed: results are open.")
    db.expire_all()
    renewal = request.renewal
    assert renewal is not None and renewal.renewed_from_id == allocation.id
    assert followups.renewed_by(db, allocation) == renewal
    assert (renewal.call_resource_id, renewal.award_id) == (
        allocation.call_resource_id,
        allocation.award_id,
    )
    assert renewal.hours == 800 and renewal.state == AllocationState.ACTIVE
    assert renewal.starts_on == utcnow().date()
    assert renewal.ends_on == add_months(renewal.starts_on, 6)
    assert renewal.account == allocation.account + "-r1"
    assert allocation.state == AllocationState.ACTIVE and allocation.hours == 1000
    assert budget_of(db, allocation) == (1800, 1800)
    (created,) = events(db, renewal, "allocation.create")
    assert created.details["renews"] == allocation.id and created.actor_id == officer.id
    (told,) = outbox(db, "allocations/request_decided")
    assert told.context["renewal_url"].endswith(f"/allocations/{renewal.id}")
    assert "Reviewed: results are open." in render_email(told).text

    # Renewed once: the old one takes no second renewal; the new one may be renewed in turn.
    with pytest.raises(ConflictError, match="renewed already"):
        submit_request(db, allocation, K.RENEWAL, actor=pi, hours=10, months=1, justification=WHY)
    again = submit_request(db, renewal, K.RENEWAL, actor=pi, hours=10, months=1, justification=WHY)
    decide_request(db, again, "approve", actor=officer)
    assert again.renewal is not None and again.renewal.account == allocation.account + "-r2"


def test_a_renewal_stays_pending_while_the_agreement_is_unsigned(db: Session) -> None:
    allocation = make_project_allocation(db, usable=False)
    assert allocation.state == AllocationState.PENDING
    allocation.state = (
        AllocationState.EXPIRED
    )  # a pending allocation cannot be renewed: say it ended
    db.flush()
    request = submit_request(
        db, allocation, K.RENEWAL, actor=pi_of(allocation), hours=100, months=3, justification=WHY
    )
    decide_request(db, request, "approve", actor=make_user(db, Role.PROGRAM_OFFICER))
    assert request.renewal is not None and request.renewal.state == AllocationState.PENDING


# --- hours given back --------------------------------------------------------------------------


def test_hours_given_back_are_freed_at_once_without_a_decision(db: Session) -> None:
    allocation = make_project_allocation(db, hours=1000)
    pi = pi_of(allocation)
    co_pi = make_user(db, Role.RESEARCHER, institution=allocation.institution)
    allocation.proposal.team.append(TeamMember(user=co_pi, role=TeamRole.CO_PI))
    db.flush()
    charge(db, allocation, 300 * SECONDS_PER_HOUR)

    request = submit_request(db, allocation, K.RETURN, actor=co_pi, hours=400)
    db.expire_all()
    assert request.state == W.APPROVED and request.decided_by_id == co_pi.id
    assert allocation.hours == 600 and allocation.state == AllocationState.ACTIVE
    assert budget_of(db, allocation) == (600, 600)
    assert outbox(db, "allocations/request_submitted") == []  # nobody is asked to decide
    told = outbox(db, "allocations/request_returned")
    assert sorted(m.recipient_id or 0 for m in told) == sorted([pi.id, co_pi.id])
    assert "gave 400 unused GPU-hours" in render_email(told[0]).text


def test_hours_are_never_given_back_below_what_was_used(db: Session) -> None:
    allocation = make_project_allocation(db, hours=1000)
    pi = pi_of(allocation)
    charge(db, allocation, 300 * SECONDS_PER_HOUR + 1)  # a started hour counts: 301 are kept
    assert followups.returnable_hours(allocation) == 699
    with pytest.raises(ValidationError, match="between 1 and 699 GPU-hours"):
        submit_request(db, allocation, K.RETURN, actor=pi, hours=700)
    assert budget_of(db, allocation) == (1000, 1000)
    submit_request(db, allocation, K.RETURN, actor=pi, hours=699)
    db.expire_all()
    assert allocation.hours == 301 and budget_of(db, allocation) == (301, 301)


def test_giving_back_all_that_is_unused_uses_the_allocation_up(db: Session) -> None:
    allocation = make_project_allocation(db, hours=1000)
    charge(db, allocation, 400 * SECONDS_PER_HOUR)
    submit_request(db, allocation, K.RETURN, actor=pi_of(allocation), hours=600)
    db.expire_all()
    assert allocation.hours == 400 and allocation.state == AllocationState.EXHAUSTED
    assert len(events(db, allocation, "allocation.exhaust")) == 1


def test_usage_charged_since_the_return_was_asked_refuses_it(db: Session) -> None:
    """What was used when the hours are freed counts, not when they were asked for."""
    allocation = make_project_allocation(db, hours=1000)
    request = make_request(db, allocation, kind=K.RETURN, hours=900)
    charge(db, allocation, 200 * SECONDS_PER_HOUR)
    error = refused(
        db, lambda: FOLLOW_UP_WORKFLOW.run(db, request, "give_back", actor=pi_of(allocation))
    )
    assert isinstance(error, (ConflictError, ValidationError))
    assert "between 1 and 800 GPU-hours" in str(error)
    assert allocation.hours == 1000 and budget_of(db, allocation) == (1000, 1000)


# --- who may ask, and one at a time ------------------------------------------------------------


def test_only_the_pi_and_co_pis_ask(db: Session) -> None:
    allocation = make_project_allocation(db)
    member = make_user(db, Role.RESEARCHER, institution=allocation.institution)
    allocation.proposal.team.append(TeamMember(user=member, role=TeamRole.MEMBER))
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=allocation.institution)
    db.flush()
    for who in (member, official, make_user(db, Role.PROGRAM_OFFICER)):
        with pytest.raises(PermissionDeniedError):
            submit_request(db, allocation, K.SUPPLEMENT, actor=who, hours=10, justification=WHY)
    assert db.scalar(select(func.count()).select_from(FollowUpRequest)) == 0


def test_one_open_request_of_each_kind_per_allocation(db: Session) -> None:
    allocation = make_project_allocation(db)
    pi = pi_of(allocation)
    first = submit_request(db, allocation, K.SUPPLEMENT, actor=pi, hours=10, justification=WHY)
    with pytest.raises(ConflictError, match="already has a request for more hours"):
        submit_request(db, allocation, K.SUPPLEMENT, actor=pi, hours=20, justification=WHY)
    submit_request(
        db,
        allocation,
        K.EXTENSION,
        actor=pi,
        ends_on=allocation.ends_on + dt.timedelta(days=10),
        justification=WHY,
    )
    withdraw_request(db, first, actor=pi)
    assert submit_request(db, allocation, K.SUPPLEMENT, actor=pi, hours=20, justification=WHY)


def test_a_request_needs_a_reason_and_an_allocation_open_to_it(db: Session) -> None:
    allocation = make_project_allocation(db)
    pi = pi_of(allocation)
    with pytest.raises(ValidationError, match="Say why"):
        submit_request(db, allocation, K.SUPPLEMENT, actor=pi, hours=10, justification=" ")
    pending = make_project_allocation(db, pi=pi, usable=False)
    with pytest.raises(ConflictError, match="Renewal cannot be asked for while"):
        submit_request(db, pending, K.RENEWAL, actor=pi, hours=10, months=1, justification=WHY)
    allocation.ends_on = allocation.starts_on + dt.timedelta(days=1)
    allocation.starts_on -= dt.timedelta(days=400)
    allocation.ends_on = utcnow().date() - dt.timedelta(days=1)
    db.flush()
    with pytest.raises(ConflictError, match="period has ended: ask for a renewal"):
        submit_request(db, allocation, K.SUPPLEMENT, actor=pi, hours=10, justification=WHY)


def test_withdrawing_tells_whoever_was_asked_to_decide(db: Session) -> None:
    allocation = make_project_allocation(db)
    pi = pi_of(allocation)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    request = submit_request(db, allocation, K.SUPPLEMENT, actor=pi, hours=10, justification=WHY)
    asked = {m.recipient_id for m in outbox(db, "allocations/request_submitted")}
    withdraw_request(db, request, actor=pi)
    told = {m.recipient_id for m in outbox(db, "allocations/request_withdrawn")}
    assert officer.id in asked and told == asked and pi.id not in told
    assert (
        "withdrew the request" in render_email(outbox(db, "allocations/request_withdrawn")[0]).text
    )


# --- who decides: allocation reviewers and their ceiling ---------------------------------------


def test_an_allocation_reviewer_decides_within_the_ceiling_only(db: Session) -> None:
    allocation = make_project_allocation(db)
    pi = pi_of(allocation)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    by_resource = make_user(db, Role.REVIEWER)
    by_call = make_user(db, Role.REVIEWER)
    elsewhere = make_user(db, Role.REVIEWER)
    assign_reviewer(
        db, actor=officer, user=by_resource, resource=allocation.resource, ceiling_hours=500
    )
    assign_reviewer(db, actor=officer, user=by_call, call=allocation.call_resource.call)
    other = make_project_allocation(db)
    assign_reviewer(db, actor=officer, user=elsewhere, resource=other.resource)

    small = submit_request(db, allocation, K.SUPPLEMENT, actor=pi, hours=500, justification=WHY)
    longer = submit_request(
        db,
        allocation,
        K.EXTENSION,
        actor=pi,
        ends_on=allocation.ends_on + dt.timedelta(days=60),
        justification=WHY,
    )
    large = submit_request(
        db, allocation, K.RENEWAL, actor=pi, hours=501, months=3, justification=WHY
    )

    assert can_decide_follow_up(by_resource, small) and can_decide_follow_up(by_resource, longer)
    assert not can_decide_follow_up(by_resource, large)
    assert all(can_decide_follow_up(by_call, r) for r in (small, longer, large))
    assert not any(can_decide_follow_up(elsewhere, r) for r in (small, longer, large))
    queue = set(db.scalars(requests_to_decide(by_resource)))
    assert queue == {small, longer}
    assert by_resource.id not in {u.id for u in db.scalars(deciders_of_request(large))}

    with pytest.raises(PermissionDeniedError):
        decide_request(db, large, "approve", actor=by_resource)
    assert large.state == W.SUBMITTED
    decide_request(db, small, "approve", actor=by_resource, note="Within my ceiling.")
    assert small.state == W.APPROVED and small.decided_by_id == by_resource.id

    # A reviewer taken out of the pool (or whose assignment ends) decides nothing any more.
    db.delete(next(g for g in by_call.role_grants if g.role == Role.REVIEWER))
    db.flush()
    db.expire_all()
    assert not can_decide_follow_up(by_call, large)
    assignment = db.scalars(
        select(AllocationReviewer).where(AllocationReviewer.user_id == by_resource.id)
    ).one()
    unassign_reviewer(db, assignment, actor=officer)
    assert not can_decide_follow_up(by_resource, longer)


def test_nobody_decides_a_request_of_their_own_project(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER, Role.RESEARCHER)
    allocation = make_project_allocation(db, pi=officer)
    request = submit_request(
        db, allocation, K.SUPPLEMENT, actor=officer, hours=10, justification=WHY
    )
    assert not can_decide_follow_up(officer, request)
    with pytest.raises(PermissionDeniedError):
        decide_request(db, request, "approve", actor=officer)
    assert officer.id not in {u.id for u in db.scalars(deciders_of_request(request))}


def test_assigning_reviewers(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    reviewer = make_user(db, Role.REVIEWER)
    allocation = make_project_allocation(db)
    resource = allocation.resource
    with pytest.raises(PermissionDeniedError):
        assign_reviewer(db, actor=make_user(db, Role.REVIEWER), user=reviewer, resource=resource)
    with pytest.raises(ValidationError, match="not in the reviewer pool"):
        assign_reviewer(db, actor=officer, user=make_user(db, Role.RESEARCHER), resource=resource)
    with pytest.raises(ValidationError, match="either a resource or a call"):
        assign_reviewer(
            db, actor=officer, user=reviewer, resource=resource, call=allocation.call_resource.call
        )
    first = assign_reviewer(db, actor=officer, user=reviewer, resource=resource, ceiling_hours=100)
    again = assign_reviewer(db, actor=officer, user=reviewer, resource=resource, ceiling_hours=900)
    assert first.id == again.id and again.ceiling_hours == 900
    assert [
        e.action
        for e in db.scalars(
            select(AuditEvent)
            .where(AuditEvent.object_type == "allocation_reviewers")
            .order_by(AuditEvent.id)
        )
    ] == ["allocation_reviewer.assign", "allocation_reviewer.update"]


# --- the lists and the mails follow the rules --------------------------------------------------


def test_lists_and_recipients_agree_with_the_rules(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    call = make_call(db, budget_hours=100_000, max_request_hours=5000)
    own = make_project_allocation(db, call=call)
    other = make_project_allocation(db, call=call)
    elsewhere = make_project_allocation(db)
    reviewer = make_user(db, Role.REVIEWER)
    capped = make_user(db, Role.REVIEWER)
    assign_reviewer(db, actor=officer, user=reviewer, call=db.get(Call, call.id))
    assign_reviewer(db, actor=officer, user=capped, resource=own.resource, ceiling_hours=200)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=own.institution)
    requests = [
        submit_request(db, own, K.SUPPLEMENT, actor=pi_of(own), hours=100, justification=WHY),
        submit_request(
            db, own, K.RENEWAL, actor=pi_of(own), hours=300, months=2, justification=WHY
        ),
        submit_request(db, other, K.SUPPLEMENT, actor=pi_of(other), hours=100, justification=WHY),
        submit_request(
            db, elsewhere, K.SUPPLEMENT, actor=pi_of(elsewhere), hours=100, justification=WHY
        ),
        submit_request(db, elsewhere, K.RETURN, actor=pi_of(elsewhere), hours=10),
    ]
    users = [
        officer,
        make_user(db, Role.ADMIN),
        reviewer,
        capped,
        official,
        pi_of(own),
        pi_of(elsewhere),
        make_user(db, Role.RESEARCHER),
    ]
    assert disagreements(db, visible_follow_ups, can_view_follow_up, users, requests) == []
    assert disagreements(db, requests_to_decide, can_decide_follow_up, users, requests[:4]) == []
    assert recipients_disagree(db, deciders_of_request, can_decide_follow_up, users, requests) == []
