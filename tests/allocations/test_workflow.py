"""Every (state, action) pair of an allocation, allowed and refused, through the shared runner — each
action taken by whom (or what) its rule allows, at the moment it happens in real life: activated by
the step that opens the gate, used up when usage reaches the hours, expired after the end date (the
sweep, acting as nobody), suspended and resumed by program staff — so only the state decides. Then
the checks each step makes before it changes anything."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy.orm import Session

from portal.agreements.models import AgreementKind, AgreementState
from portal.allocations import budget, services
from portal.allocations.models import SECONDS_PER_HOUR, Allocation
from portal.allocations.models import AllocationState as S
from portal.allocations.workflow import ALLOCATION_WORKFLOW
from portal.auth.models import Role, User
from portal.core.errors import ConflictError, PermissionDeniedError, ValidationError
from portal.core.hooks import GateClosedError
from portal.core.models import utcnow
from portal.institutions.models import InstitutionState
from tests.factories import make_agreement, make_allocation, make_user
from tests.support.mail import outbox
from tests.support.workflows import assert_declared, assert_step, every_pair

#: An allocation's life, written from the issue rather than from the workflow's table: it waits
#: for its gate, becomes active, is used up or suspended (waiting ones too: a suspended institution
#: stops everything), resumes; a used-up one is active again when a supplement adds hours; and it
#: expires at the end of its period whatever it is doing then — except once it has expired.
EXPECTED = {
    (S.PENDING, "activate"): S.ACTIVE,
    (S.ACTIVE, "exhaust"): S.EXHAUSTED,
    (S.PENDING, "suspend"): S.SUSPENDED,
    (S.ACTIVE, "suspend"): S.SUSPENDED,
    (S.SUSPENDED, "resume"): S.ACTIVE,
    (S.EXHAUSTED, "replenish"): S.ACTIVE,
    (S.PENDING, "expire"): S.EXPIRED,
    (S.ACTIVE, "expire"): S.EXPIRED,
    (S.EXHAUSTED, "expire"): S.EXPIRED,
    (S.SUSPENDED, "expire"): S.EXPIRED,
}

#: The mail each action sends to the project's team.
MAIL = {
    "activate": "allocations/ready",
    "resume": "allocations/ready",
    "replenish": "allocations/ready",
    "exhaust": "allocations/stopped",
    "suspend": "allocations/stopped",
    "expire": "allocations/stopped",
}


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    """Steps write e-mails with links to the outbox."""
    with app.app_context():
        yield


def past_end(allocation: Allocation) -> None:
    """Its period ended yesterday (a fact the sweep reads)."""
    today = utcnow().date()
    allocation.starts_on, allocation.ends_on = (
        today - dt.timedelta(days=400),
        today - dt.timedelta(1),
    )


def allocation_in(db: Session, state: S, officer: User) -> Allocation:
    """An allocation brought into ``state`` the way real life does: approved (pending, or active
    with the contribution agreement signed first), used up by a charge, suspended by staff, or
    expired by the sweep after its end date."""
    allocation = make_allocation(db, usable=state != S.PENDING)
    if state == S.EXHAUSTED:
        services.charge(db, allocation, allocation.hours * SECONDS_PER_HOUR)
    elif state == S.SUSPENDED:
        ALLOCATION_WORKFLOW.run(db, allocation, "suspend", actor=officer, reason="Audit of use.")
    elif state == S.EXPIRED:
        past_end(allocation)
        db.flush()
        assert services.sweep(db)["expired"] == 1
    db.flush()
    assert allocation.state == state
    return allocation


def test_workflow_names_the_same_actions_everywhere() -> None:
    assert_declared(ALLOCATION_WORKFLOW)


@pytest.mark.parametrize(("state", "action"), every_pair(S, ALLOCATION_WORKFLOW))
def test_allocation_transition_table(db: Session, state: S, action: str) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)
    allocation = allocation_in(db, state, officer)
    actor: User | None = officer
    if action == "activate":
        # The last signature of the contribution agreement opens the gate; its signer activates.
        make_agreement(
            db,
            kind=AgreementKind.CONTRIBUTION,
            proposal=allocation.proposal,
            state=AgreementState.ACTIVE,
        )
    elif action == "exhaust":
        actor = None  # the usage that reaches the hours
        allocation.used_gpu_seconds = allocation.hours * SECONDS_PER_HOUR
    elif action == "replenish" and allocation.used_gpu_seconds >= allocation.hours * 3600:
        # A supplement's approval adds hours out of the budget; its decider is the actor.
        budget.take(db, allocation.call_resource, 100)
        allocation.hours += 100
    elif action == "expire":
        actor = None  # the sweep, after the end date
        past_end(allocation)
    db.flush()
    resource, call_resource = allocation.resource, allocation.call_resource
    db.refresh(resource)
    db.refresh(call_resource)
    held, budgeted = resource.allocated_hours, call_resource.allocated_hours
    mails = len(outbox(db, MAIL[action]))

    assert_step(
        db,
        ALLOCATION_WORKFLOW,
        allocation,
        action,
        EXPECTED,
        lambda: ALLOCATION_WORKFLOW.run(
            db, allocation, action, actor=actor, reason="Misuse is being looked into."
        ),
    )

    db.refresh(resource)
    db.refresh(call_resource)
    allowed = (state, action) in EXPECTED
    # Expiring gives the capacity back to the resource, for later calls; the call's budget stays
    # spent (its hours were awarded). Nothing else moves either counter.
    given_back = allocation.hours if allowed and action == "expire" else 0
    assert resource.allocated_hours == held - given_back
    assert call_resource.allocated_hours == budgeted
    # Each step tells the team; a refused one tells nobody.
    assert len(outbox(db, MAIL[action])) == mails + (1 if allowed else 0)


# --- what each step checks first -------------------------------------------------------------------


def test_activation_waits_for_the_contribution_agreement(db: Session) -> None:
    allocation = make_allocation(db, usable=False)
    signer = make_user(db, Role.PROGRAM_OFFICER)
    with pytest.raises(GateClosedError, match="needs a signed project contribution agreement"):
        ALLOCATION_WORKFLOW.run(db, allocation, "activate", actor=signer)
    db.expire(allocation, ["state"])
    assert allocation.state == S.PENDING


def test_activation_waits_for_the_institution_to_be_a_partner(db: Session) -> None:
    allocation = make_allocation(db, usable=False)
    make_agreement(
        db,
        kind=AgreementKind.CONTRIBUTION,
        proposal=allocation.proposal,
        state=AgreementState.ACTIVE,
    )
    allocation.institution.state = InstitutionState.SUSPENDED
    db.flush()
    with pytest.raises(GateClosedError, match="is suspended, not a partner in good standing"):
        ALLOCATION_WORKFLOW.run(db, allocation, "activate", actor=make_user(db, Role.ADMIN))
    assert allocation.state == S.PENDING


def test_nobody_anonymous_activates_an_allocation(db: Session) -> None:
    allocation = make_allocation(db, usable=False)
    make_agreement(
        db,
        kind=AgreementKind.CONTRIBUTION,
        proposal=allocation.proposal,
        state=AgreementState.ACTIVE,
    )
    with pytest.raises(PermissionDeniedError, match="nobody activates an allocation by hand"):
        ALLOCATION_WORKFLOW.run(db, allocation, "activate", actor=None)
    assert allocation.state == S.PENDING


@pytest.mark.parametrize("role", [Role.RESEARCHER, Role.SIGNING_OFFICIAL, Role.REVIEWER, None])
def test_only_program_staff_suspend_and_resume(db: Session, role: Role | None) -> None:
    allocation = make_allocation(db)
    # The project's own PI and its institution's signing official are not program staff either.
    for user in (
        make_user(db, role, institution=allocation.institution) if role else None,
        allocation.proposal.pi,
    ):
        with pytest.raises(PermissionDeniedError, match="Only program staff"):
            ALLOCATION_WORKFLOW.run(db, allocation, "suspend", actor=user, reason="No.")
    assert allocation.state == S.ACTIVE
    ALLOCATION_WORKFLOW.run(
        db, allocation, "suspend", actor=make_user(db, Role.ADMIN), reason="Audit."
    )
    with pytest.raises(PermissionDeniedError, match="Only program staff"):
        ALLOCATION_WORKFLOW.run(db, allocation, "resume", actor=allocation.proposal.pi)
    assert allocation.state == S.SUSPENDED


def test_suspending_needs_a_reason(db: Session) -> None:
    allocation = make_allocation(db)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    for blank in (None, "", "   "):
        with pytest.raises(ValidationError, match="please give a reason"):
            ALLOCATION_WORKFLOW.run(db, allocation, "suspend", actor=officer, reason=blank)
    assert allocation.state == S.ACTIVE


def test_an_allocation_is_used_up_only_when_its_usage_reaches_its_hours(db: Session) -> None:
    allocation = make_allocation(db, hours=10)
    allocation.used_gpu_seconds = 10 * SECONDS_PER_HOUR - 1
    db.flush()
    for who in (None, make_user(db, Role.PROGRAM_OFFICER)):
        with pytest.raises(PermissionDeniedError, match="only when its usage reaches its hours"):
            ALLOCATION_WORKFLOW.run(db, allocation, "exhaust", actor=who)
    assert allocation.state == S.ACTIVE


def test_an_allocation_expires_only_after_its_end_date(db: Session) -> None:
    allocation = make_allocation(db)
    today = utcnow().date()
    allocation.starts_on, allocation.ends_on = today - dt.timedelta(days=30), today
    db.flush()
    # Its last day is today: not yet, not even for program staff.
    for who in (None, make_user(db, Role.ADMIN)):
        with pytest.raises(PermissionDeniedError, match="only after its end date"):
            ALLOCATION_WORKFLOW.run(db, allocation, "expire", actor=who)
    assert allocation.state == S.ACTIVE


def test_resuming_needs_time_and_hours_left_and_an_open_gate(db: Session) -> None:
    officer = make_user(db, Role.PROGRAM_OFFICER)

    past = allocation_in(db, S.SUSPENDED, officer)
    past_end(past)
    used_up = allocation_in(db, S.SUSPENDED, officer)
    used_up.used_gpu_seconds = used_up.hours * SECONDS_PER_HOUR
    unsigned = make_allocation(db, usable=False)
    ALLOCATION_WORKFLOW.run(db, unsigned, "suspend", actor=officer, reason="Audit.")
    db.flush()

    with pytest.raises(ConflictError, match="period has ended: it expires instead"):
        ALLOCATION_WORKFLOW.run(db, past, "resume", actor=officer)
    with pytest.raises(ConflictError, match="This allocation is used up"):
        ALLOCATION_WORKFLOW.run(db, used_up, "resume", actor=officer)
    with pytest.raises(GateClosedError, match="needs a signed project contribution agreement"):
        ALLOCATION_WORKFLOW.run(db, unsigned, "resume", actor=officer)
    assert {past.state, used_up.state, unsigned.state} == {S.SUSPENDED}
