"""The rules of allocations, as the people involved meet them: an approval allocates each award
inside the budgets (or fails with the reason and changes nothing); the hours are usable once the
contribution agreement is fully signed and the institution is a partner; a suspended institution's
allocations stop and its reinstatement resumes them; usage reaching the hours uses them up; and the
scheduled sweep expires what has ended and sends each notice once."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest
from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.agreements import services as agreements
from portal.agreements.models import (
    Agreement,
    AgreementKind,
    AgreementState,
    Signature,
    SubjectType,
)
from portal.allocations import services
from portal.allocations.models import SECONDS_PER_HOUR, Allocation
from portal.allocations.models import AllocationState as S
from portal.allocations.workflow import ALLOCATION_WORKFLOW, usable_blocker
from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.errors import ConflictError
from portal.core.models import utcnow
from portal.institutions import services as institutions
from portal.institutions.models import Institution, InstitutionState
from portal.notifications.models import OutboxMessage
from portal.proposals.models import (
    Call,
    CallResource,
    Proposal,
    ProposalState,
    ResourceRequest,
    TeamMember,
    TeamRole,
)
from portal.proposals.services import decide_proposal
from tests.factories import (
    make_agreement,
    make_agreement_template,
    make_allocation,
    make_call,
    make_institution,
    make_project_allocation,
    make_proposal,
    make_user,
)
from tests.support.mail import outbox


@pytest.fixture(autouse=True)
def _app_context(app: Flask) -> Iterator[None]:
    """Steps write e-mails with links to the outbox; blockers link to agreements."""
    with app.app_context():
        yield


@pytest.fixture
def officer(db: Session) -> User:
    return make_user(db, Role.PROGRAM_OFFICER, display_name="Olga Officer")


def team_of(db: Session, proposal: Proposal) -> User:
    """Adds a co-investigator (at the proposal's institution) to the team; returns them."""
    co = make_user(db, Role.RESEARCHER, institution=proposal.institution)
    proposal.team.append(TeamMember(user=co, role=TeamRole.CO_PI))
    db.flush()
    return co


def events(db: Session, action: str, object_id: int | None = None) -> list[AuditEvent]:
    q = select(AuditEvent).where(AuditEvent.action == action).order_by(AuditEvent.id)
    if object_id is not None:
        q = q.where(AuditEvent.object_id == object_id)
    return list(db.scalars(q))


def mailed(db: Session, template: str, allocation: Allocation) -> list[OutboxMessage]:
    """The mails of one kind about one allocation (their link names it)."""
    return [
        m
        for m in outbox(db, template)
        if m.context["url"].endswith(f"/allocations/{allocation.id}")
    ]


def counters(db: Session, cr: CallResource) -> tuple[int, int]:
    db.refresh(cr)
    db.refresh(cr.resource)
    return cr.allocated_hours, cr.resource.allocated_hours


def signed(db: Session, proposal: Proposal) -> Agreement:
    """The project's contribution agreement, fully signed (issued and signed elsewhere)."""
    return make_agreement(
        db, kind=AgreementKind.CONTRIBUTION, proposal=proposal, state=AgreementState.ACTIVE
    )


def sign(db: Session, slot: Signature, user: User) -> None:
    agreements.sign(
        db,
        slot,
        actor=user,
        typed_name=user.display_name,
        confirmed=True,
        shown_sha256=slot.agreement.text_sha256,
        ip=None,
        user_agent=None,
    )


def past_end(allocation: Allocation, days: int = 1) -> None:
    today = utcnow().date()
    allocation.starts_on = today - dt.timedelta(days=400)
    allocation.ends_on = today - dt.timedelta(days=days)


def ending_in(allocation: Allocation, days: int) -> None:
    today = utcnow().date()
    allocation.starts_on = today - dt.timedelta(days=300)
    allocation.ends_on = today + dt.timedelta(days=days)


def two_resource_proposal(db: Session) -> tuple[Proposal, Call]:
    """A proposal in review asking 1,000 GPU-hours on one resource of its call and 500 on another."""
    call = make_call(db, resources=2)
    proposal = make_proposal(db, call=call, state=ProposalState.IN_REVIEW)
    proposal.requests.append(
        ResourceRequest(call_resource=call.resources[1], hours=500, justification="Fine-tuning.")
    )
    db.flush()
    return proposal, call


# --- approval allocates -------------------------------------------------------------------------


def test_approval_allocates_each_award_waiting_for_the_contribution_agreement(
    db: Session, officer: User
) -> None:
    proposal, call = two_resource_proposal(db)
    first, second = call.resources

    decide_proposal(db, proposal, "approve", actor=officer, awards={first.id: 800, second.id: 500})

    allocations = db.scalars(
        select(Allocation).where(Allocation.proposal_id == proposal.id).order_by(Allocation.id)
    ).all()
    assert [(a.call_resource_id, a.hours, a.state) for a in allocations] == [
        (first.id, 800, S.PENDING),
        (second.id, 500, S.PENDING),
    ]
    for allocation, cr in zip(allocations, (first, second), strict=True):
        award = next(w for w in proposal.awards if w.call_resource_id == cr.id)
        assert allocation.award_id == award.id
        assert allocation.resource_id == cr.resource_id
        assert allocation.institution_id == proposal.institution_id
        # The project's period: from its planned start, for its duration.
        assert (allocation.starts_on, allocation.ends_on) == (
            dt.date(2027, 1, 1),
            dt.date(2028, 1, 1),
        )
        assert allocation.cluster == cr.resource.cluster
        assert allocation.account == f"atom-{proposal.id}-h100"
        assert counters(db, cr) == (allocation.hours, allocation.hours)
        (created,) = events(db, "allocation.create", allocation.id)
        assert created.actor_id == officer.id and created.details["hours"] == allocation.hours
        blocker = usable_blocker(allocation)
        assert blocker is not None
        assert blocker.message == (
            f"Using the GPU-hours awarded to “{proposal.title}” needs a signed project "
            "contribution agreement, and none has been issued yet: program staff issue it."
        )
    # Nothing to use yet, so nobody is told the hours are ready.
    assert outbox(db, "allocations/ready") == []


def test_approval_with_the_agreement_already_signed_makes_the_hours_usable_at_once(
    db: Session, officer: User
) -> None:
    proposal = make_proposal(db, state=ProposalState.IN_REVIEW)
    co = team_of(db, proposal)
    make_user(db, Role.SIGNING_OFFICIAL, institution=proposal.institution)
    signed(db, proposal)
    (request,) = proposal.requests

    decide_proposal(db, proposal, "approve", actor=officer, awards={request.call_resource_id: 900})

    (allocation,) = db.scalars(select(Allocation).where(Allocation.proposal_id == proposal.id))
    assert allocation.state == S.ACTIVE and usable_blocker(allocation) is None
    (activated,) = events(db, "allocation.activate", allocation.id)
    assert activated.actor_id == officer.id
    # The team hears, with the account to run jobs under; the official and staff do not.
    ready = outbox(db, "allocations/ready")
    assert {m.recipient_id for m in ready} == {proposal.pi.id, co.id}  # type: ignore[union-attr]
    assert all(m.context["account"] == allocation.account for m in ready)
    assert all(m.context["again"] is False for m in ready)


def test_the_last_signature_of_the_contribution_agreement_activates_the_allocations(
    db: Session, officer: User
) -> None:
    # The contribution agreement goes out with the approval (an automatic template).
    make_agreement_template(db, kind=AgreementKind.CONTRIBUTION, auto_issue=True)
    proposal, call = two_resource_proposal(db)
    co = team_of(db, proposal)
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=proposal.institution)
    decide_proposal(
        db,
        proposal,
        "approve",
        actor=officer,
        awards={call.resources[0].id: 1000, call.resources[1].id: 500},
    )
    allocations = db.scalars(select(Allocation).where(Allocation.proposal_id == proposal.id)).all()
    agreement = agreements.standing(
        db, AgreementKind.CONTRIBUTION, SubjectType.PROJECT, proposal.id
    )
    assert agreement is not None and agreement.state == AgreementState.AWAITING
    pi_slot, official_slot, program_slot = agreement.signatures
    blocker = usable_blocker(allocations[0])
    assert blocker is not None and blocker.message.startswith(
        f"Using the GPU-hours awarded to “{proposal.title}” needs the project contribution "
        f"agreement “{agreement.title}” fully signed. It is waiting on: Principal investigator"
    )

    sign(db, pi_slot, proposal.pi)  # type: ignore[arg-type]
    sign(db, official_slot, official)
    assert {a.state for a in allocations} == {S.PENDING}
    assert outbox(db, "allocations/ready") == []

    countersigner = make_user(db, Role.PROGRAM_OFFICER)
    sign(db, program_slot, countersigner)

    assert agreement.state == AgreementState.ACTIVE
    assert {a.state for a in allocations} == {S.ACTIVE}
    for allocation in allocations:
        assert usable_blocker(allocation) is None
        (activated,) = events(db, "allocation.activate", allocation.id)
        assert activated.actor_id == countersigner.id
        # One mail per allocation to each of the team; not to the official, not to staff.
        assert {m.recipient_id for m in mailed(db, "allocations/ready", allocation)} == {
            proposal.pi.id,
            co.id,
        }
    assert len(outbox(db, "allocations/ready")) == 4


def test_a_suspended_institutions_projects_cannot_use_their_hours(
    db: Session, officer: User
) -> None:
    allocation = make_allocation(db, usable=False)
    signed(db, allocation.proposal)
    institution = allocation.institution
    institution.state = InstitutionState.SUSPENDED
    db.flush()
    blocker = usable_blocker(allocation)
    assert blocker is not None
    assert blocker.message == (
        f"{institution.name} is suspended, not a partner in good standing: its projects' "
        "GPU-hours cannot be used until program staff reinstate it."
    )
    assert not services.activate_if_usable(db, allocation, actor=officer)
    assert allocation.state == S.PENDING


# --- budgets ------------------------------------------------------------------------------------


def test_an_approval_that_does_not_fit_the_calls_budget_fails_and_changes_nothing(
    db: Session, officer: User
) -> None:
    make_agreement_template(db, kind=AgreementKind.CONTRIBUTION, auto_issue=True)
    call = make_call(db, budget_hours=1000, max_request_hours=1000)
    (cr,) = call.resources
    make_project_allocation(db, call=call, hours=800)
    proposal = make_proposal(db, call=call, state=ProposalState.IN_REVIEW)
    before = len(outbox(db, "proposals/decided"))

    # The view rolls its transaction back when the service refuses; here, a savepoint.
    with pytest.raises(ConflictError) as refused, db.begin_nested():
        decide_proposal(db, proposal, "approve", actor=officer, awards={cr.id: 300})

    assert str(refused.value) == (
        f"The call's budget on {cr.resource.name} has 200 GPU-hours left; 300 do not fit. "
        "Nothing was allocated."
    )
    db.expire_all()
    assert proposal.state == ProposalState.IN_REVIEW and proposal.awards == []
    assert proposal.decided_at is None
    assert counters(db, cr) == (800, 800)
    assert not db.scalars(select(Allocation).where(Allocation.proposal_id == proposal.id)).all()
    assert events(db, "proposal.approve", proposal.id) == []
    assert len(outbox(db, "proposals/decided")) == before
    assert (
        agreements.standing(db, AgreementKind.CONTRIBUTION, SubjectType.PROJECT, proposal.id)
        is None
    )
    # What is left still fits.
    decide_proposal(db, proposal, "approve", actor=officer, awards={cr.id: 200})
    assert counters(db, cr) == (1000, 1000)


def test_an_approval_whose_second_award_exceeds_the_resources_capacity_allocates_neither(
    db: Session, officer: User
) -> None:
    proposal, call = two_resource_proposal(db)
    first, second = call.resources
    second.resource.capacity_hours = 400
    db.flush()

    with pytest.raises(ConflictError) as refused, db.begin_nested():
        decide_proposal(
            db, proposal, "approve", actor=officer, awards={first.id: 1000, second.id: 500}
        )

    assert str(refused.value) == (
        f"{second.resource.name} has 400 GPU-hours of capacity left; 500 do not fit. "
        "Nothing was allocated."
    )
    db.expire_all()
    assert proposal.state == ProposalState.IN_REVIEW and proposal.awards == []
    assert counters(db, first) == (0, 0) and counters(db, second) == (0, 0)
    assert db.scalar(select(func.count(Allocation.id))) == 0


# --- the institution's standing -------------------------------------------------------------------


def partner_with_agreement(db: Session) -> Institution:
    """A partner institution whose partnership agreement is in force (it can be reinstated)."""
    institution = make_institution(db, name="Northfield University")
    make_agreement(db, institution=institution, state=AgreementState.ACTIVE)
    return institution


def at(db: Session, institution: Institution, *, usable: bool = True) -> Allocation:
    pi = make_user(db, Role.RESEARCHER, institution=institution)
    return make_project_allocation(db, pi=pi, usable=usable)


def test_suspending_an_institution_suspends_its_allocations_with_the_reason(
    db: Session, officer: User
) -> None:
    institution = partner_with_agreement(db)
    active, pending, used_up = (
        at(db, institution),
        at(db, institution, usable=False),
        at(db, institution),
    )
    services.charge(db, used_up, used_up.hours * SECONDS_PER_HOUR)
    elsewhere = make_allocation(db)

    institutions.transition(db, institution, "suspend", actor=officer, reason="Export review.")

    # A pending allocation needs a partner to start at all: it stays pending (and starts once the
    # institution is reinstated and its agreement signed).
    assert (active.state, pending.state) == (S.SUSPENDED, S.PENDING)
    assert active.suspended_with_institution
    assert events(db, "allocation.suspend", pending.id) == []
    # Used up stays used up (nothing to stop); another institution's hours are not touched.
    assert (used_up.state, elsewhere.state) == (S.EXHAUSTED, S.ACTIVE)
    reason = "Northfield University was suspended: Export review."
    (event,) = events(db, "allocation.suspend", active.id)
    assert event.actor_id == officer.id and event.details["reason"] == reason
    (mail,) = mailed(db, "allocations/stopped", active)
    assert mail.recipient_id == active.proposal.pi.id  # type: ignore[union-attr]
    assert (mail.context["why"], mail.context["reason"]) == ("suspend", reason)


def test_reinstating_resumes_the_allocations_within_their_period_and_hours(
    db: Session, officer: User
) -> None:
    institution = partner_with_agreement(db)
    within, ended, used_up = (at(db, institution) for _ in range(3))
    institutions.transition(db, institution, "suspend", actor=officer, reason="Export review.")
    past_end(ended)
    db.flush()
    # Jobs that ran before the suspension are reported late: they use up the hours.
    services.charge(db, used_up, used_up.hours * SECONDS_PER_HOUR)
    assert used_up.state == S.SUSPENDED

    institutions.transition(db, institution, "reinstate", actor=officer)

    assert within.state == S.ACTIVE
    (event,) = events(db, "allocation.resume", within.id)
    assert event.actor_id == officer.id
    # Told the hours are usable again (after the first "ready" of its approval).
    assert [m.context["again"] for m in mailed(db, "allocations/ready", within)] == [False, True]
    # The sweep expires the ended one; the used-up one has nothing to resume.
    assert (ended.state, used_up.state) == (S.SUSPENDED, S.SUSPENDED)
    assert events(db, "allocation.resume", ended.id) == events(db, "allocation.resume", used_up.id)
    assert services.sweep(db)["expired"] == 1 and ended.state == S.EXPIRED


def test_a_waiting_allocation_suspended_with_its_institution_activates_once_signed_after_reinstatement(
    db: Session, officer: User
) -> None:
    make_agreement_template(db, kind=AgreementKind.CONTRIBUTION, auto_issue=True)
    institution = partner_with_agreement(db)
    waiting = at(db, institution, usable=False)
    institutions.transition(db, institution, "suspend", actor=officer, reason="Export review.")
    institutions.transition(db, institution, "reinstate", actor=officer)
    agreement = agreements.standing(
        db, AgreementKind.CONTRIBUTION, SubjectType.PROJECT, waiting.proposal_id
    )
    assert agreement is not None
    official = make_user(db, Role.SIGNING_OFFICIAL, institution=institution)
    for slot, who in zip(
        agreement.signatures, (waiting.proposal.pi, official, officer), strict=True
    ):
        sign(db, slot, who)  # type: ignore[arg-type]
    assert waiting.state == S.ACTIVE


def test_reinstating_an_institution_leaves_an_allocation_staff_suspended_for_its_own_reason(
    db: Session, officer: User
) -> None:
    institution = partner_with_agreement(db)
    misused = at(db, institution)
    ALLOCATION_WORKFLOW.run(db, misused, "suspend", actor=officer, reason="Crypto mining.")
    institutions.transition(db, institution, "suspend", actor=officer, reason="Export review.")
    institutions.transition(db, institution, "reinstate", actor=officer)
    assert misused.state == S.SUSPENDED


def test_withdrawing_a_partner_institution_stops_its_allocations(
    db: Session, officer: User
) -> None:
    institution = partner_with_agreement(db)
    active = at(db, institution)
    institutions.transition(db, institution, "withdraw", actor=officer, reason="Left the program.")
    assert active.state != S.ACTIVE


# --- usage ----------------------------------------------------------------------------------------


def test_usage_reaching_the_hours_uses_the_allocation_up(db: Session) -> None:
    allocation = make_allocation(db, hours=10)
    services.charge(db, allocation, 0)
    services.charge(db, allocation, 10 * SECONDS_PER_HOUR - 1)
    assert allocation.state == S.ACTIVE and allocation.used_gpu_seconds == 35_999
    assert outbox(db, "allocations/stopped") == []

    services.charge(db, allocation, 1)

    assert allocation.state == S.EXHAUSTED and allocation.left_hours == 0
    (event,) = events(db, "allocation.exhaust", allocation.id)
    assert event.actor_id is None
    (mail,) = mailed(db, "allocations/stopped", allocation)
    assert mail.context["why"] == "exhaust" and mail.context["used_hours"] == 10.0
    # More usage reported later is still counted; it is used up once.
    services.charge(db, allocation, 7200)
    assert allocation.used_gpu_seconds == 12 * SECONDS_PER_HOUR
    assert len(events(db, "allocation.exhaust", allocation.id)) == 1


def test_usage_of_a_waiting_allocation_is_counted_without_changing_its_state(db: Session) -> None:
    allocation = make_allocation(db, hours=10, usable=False)
    services.charge(db, allocation, 20 * SECONDS_PER_HOUR)
    assert allocation.state == S.PENDING and allocation.used_gpu_seconds == 72_000


# --- the sweep ------------------------------------------------------------------------------------


def test_the_sweep_expires_what_has_ended_and_gives_capacity_back_to_the_resource_only(
    db: Session, officer: User
) -> None:
    pending = make_allocation(db, usable=False)
    active, used_up, suspended, last_day = (make_allocation(db) for _ in range(4))
    services.charge(db, used_up, used_up.hours * SECONDS_PER_HOUR)
    ALLOCATION_WORKFLOW.run(db, suspended, "suspend", actor=officer, reason="Audit.")
    ended = [pending, active, used_up, suspended]
    for allocation in ended:
        past_end(allocation)
    ending_in(last_day, 0)  # its last day is today
    db.flush()

    counts = services.sweep(db)

    assert counts["expired"] == 4
    assert [a.state for a in ended] == [S.EXPIRED] * 4 and last_day.state == S.ACTIVE
    for allocation in ended:
        # The period is over: the resource's capacity is free for later calls; the call's budget
        # stays spent (its hours were awarded).
        assert counters(db, allocation.call_resource) == (allocation.hours, 0)
        (event,) = events(db, "allocation.expire", allocation.id)
        assert event.actor_id is None and event.details["frm"] != "expired"
        told = [m.context["why"] for m in mailed(db, "allocations/stopped", allocation)]
        assert told.count("expire") == 1
    assert counters(db, last_day.call_resource) == (last_day.hours, last_day.hours)
    (swept,) = events(db, "allocations.sweep")
    assert swept.details["expired"] == 4

    # Run again (cron): nothing more happens.
    assert not any(services.sweep(db).values())
    for allocation in ended:
        assert counters(db, allocation.call_resource) == (allocation.hours, 0)
        told = [m.context["why"] for m in mailed(db, "allocations/stopped", allocation)]
        assert told.count("expire") == 1
    assert len(events(db, "allocations.sweep")) == 1


def test_the_sweep_sends_each_notice_once(db: Session, officer: User) -> None:
    mostly_used, used_up, month_left, week_left, fresh, waiting, suspended = (
        make_allocation(db, hours=100, usable=i != 5) for i in range(7)
    )
    services.charge(db, mostly_used, 85 * SECONDS_PER_HOUR)
    services.charge(db, used_up, 100 * SECONDS_PER_HOUR)
    ending_in(month_left, 20)
    ending_in(week_left, 5)
    services.charge(db, week_left, 90 * SECONDS_PER_HOUR)
    # Neither a waiting nor a suspended allocation is reminded (they cannot be used).
    ending_in(waiting, 5)
    services.charge(db, suspended, 90 * SECONDS_PER_HOUR)
    ALLOCATION_WORKFLOW.run(db, suspended, "suspend", actor=officer, reason="Audit.")
    db.flush()

    def notices() -> dict[str, set[int]]:
        out: dict[str, set[int]] = {}
        for m in outbox(db, "allocations/notice"):
            out.setdefault(m.context["what"], set()).add(int(m.context["url"].rsplit("/", 1)[1]))
        return out

    assert services.sweep(db) == {
        "expired": 0,
        "used_100": 1,
        "used_80": 2,
        "ends_7": 1,
        "ends_30": 1,
    }
    first = {
        "used_100": {used_up.id},
        "used_80": {mostly_used.id, week_left.id},
        "ends_7": {week_left.id},
        "ends_30": {month_left.id},
    }
    assert notices() == first
    # Each to the project's team (here its PI).
    for m in outbox(db, "allocations/notice"):
        assert m.recipient_id is not None
    assert fresh.id not in set().union(*first.values())

    # Again the same day: nothing new.
    assert not any(services.sweep(db).values())
    assert notices() == first

    # Time passes: the mostly used one is used up, the month's one has a week left.
    services.charge(db, mostly_used, 15 * SECONDS_PER_HOUR)
    ending_in(month_left, 6)
    db.flush()
    assert services.sweep(db) == {
        "expired": 0,
        "used_100": 1,
        "used_80": 0,
        "ends_7": 1,
        "ends_30": 0,
    }
    assert notices() == {
        "used_100": {used_up.id, mostly_used.id},
        "used_80": {mostly_used.id, week_left.id},
        "ends_7": {week_left.id, month_left.id},
        "ends_30": {month_left.id},
    }
    assert not any(services.sweep(db).values())
    assert len(outbox(db, "allocations/notice")) == 7
