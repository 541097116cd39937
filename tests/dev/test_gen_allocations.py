"""The benchmark generator's allocations (``portal/dev/gen_allocations.py``) write in bulk, yet
keep what the services keep: one allocation per award and renewals linked to it, states that
follow from dates, gates and usage, every request decided by someone who may decide it, budgets
and capacities that add up and hold, and usage records whose GPU-seconds are exactly what each
allocation says it used."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter, defaultdict
from dataclasses import replace
from typing import Any

from flask import Flask
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from portal.allocations.followups import OPEN_TO
from portal.allocations.models import (
    HOLDING,
    SECONDS_PER_HOUR,
    Allocation,
    AllocationReviewer,
    AllocationState,
    FollowUpKind,
    FollowUpRequest,
    FollowUpState,
    UsageRecord,
)
from portal.auth.models import Role
from portal.core.audit import AuditEvent
from portal.core.dates import add_months
from portal.core.models import utcnow
from portal.dev import gen_allocations
from portal.dev.datagen import Context, Scale, generate
from portal.institutions.models import Institution, InstitutionState
from portal.outputs.models import FinalReport, ReleasedOutput, ReportState
from portal.outputs.services import project_end
from portal.proposals.models import (
    Award,
    CallResource,
    PlannedOutput,
    Proposal,
    ProposalState,
    Resource,
    TeamMember,
    TeamRole,
)
from tests.factories import make_call, make_institution, make_proposal, make_reviewer, make_user

S = AllocationState
W = FollowUpState


def _projects(db: Session, count: int) -> Context:
    """``count`` active projects with their awards, approved over the last three years (a few of
    them at an institution suspended since), and the people a generator's context names."""
    today = utcnow().date()
    call = make_call(db, resources=2, budget_hours=400_000, max_request_hours=20_000)
    suspended = make_institution(db, state=InstitutionState.SUSPENDED)
    officer = make_user(db, Role.PROGRAM_OFFICER)
    reviewers = [make_reviewer(db) for _ in range(3)]
    pi = make_user(db, Role.RESEARCHER)
    for n in range(count):
        kw: dict[str, Any] = {"institution": suspended} if n % 5 == 4 else {}
        proposal = make_proposal(
            db, call=call, pi=pi if n % 3 == 0 else None, state=ProposalState.IN_REVIEW, **kw
        )
        decided = utcnow() - dt.timedelta(days=20 + n * 1000 // count)
        proposal.state, proposal.decided_at = ProposalState.ACTIVE, decided
        proposal.start_date = decided.date() + dt.timedelta(days=14)
        proposal.duration_months = (6, 12, 24)[n % 3]
        proposal.awards = [
            Award(call_resource_id=cr.id, hours=2_000 + 500 * n) for cr in call.resources
        ]
        if proposal.start_date > today:
            proposal.start_date = today
    db.flush()
    return Context(
        session=db,
        rng=random.Random(7),
        scale=replace(Scale.of(0), allocations=8 * count, usage_records=40 * count),
        now=utcnow(),
        officer=officer.id,
        reviewers=[r.id for r in reviewers],
        personas={"pi": pi.id, "reviewer": reviewers[0].id, "officer": officer.id},
    )


def _check(db: Session, officers: set[int]) -> list[Allocation]:
    """Every promise of the generator, over everything in the database; the allocations."""
    now = utcnow()
    today = now.date()
    allocations = db.scalars(select(Allocation).order_by(Allocation.id)).all()
    by_id = {a.id: a for a in allocations}
    sums = dict(
        db.execute(
            select(
                UsageRecord.allocation_id,
                func.sum(UsageRecord.gpus * UsageRecord.elapsed_seconds),
            ).group_by(UsageRecord.allocation_id)
        ).all()
    )
    # Allocations: from awards of active projects, their states following their facts.
    awards = db.scalars(
        select(Award).join(Proposal).where(Proposal.state == ProposalState.ACTIVE)
    ).all()
    firsts = Counter(a.award_id for a in allocations if a.renewed_from_id is None)
    assert firsts == Counter(a.id for a in awards)
    for a in allocations:
        assert a.used_gpu_seconds == sums.get(a.id, 0), a
        assert a.created_at <= a.state_changed_at <= now
        cap = a.hours * SECONDS_PER_HOUR
        if a.state == S.EXHAUSTED:
            assert a.used_gpu_seconds >= cap, a
        elif a.state != S.EXPIRED:
            assert a.used_gpu_seconds < cap, a
        assert (a.state == S.EXPIRED) == (a.ends_on < today), a
        if a.state == S.PENDING:
            assert a.used_gpu_seconds == 0
        partner = a.institution.state == InstitutionState.PARTNER
        if a.state in (S.ACTIVE, S.EXHAUSTED):
            assert partner, a
        assert a.suspended_with_institution == (a.state == S.SUSPENDED and not partner), a
        assert (a.cluster, a.call_resource_id) == (a.resource.cluster, a.award.call_resource_id)
        if a.renewed_from_id is not None:
            before = by_id[a.renewed_from_id]
            assert before.award_id == a.award_id and before.created_at < a.created_at
            assert a.account.startswith(before.account.split("-r")[0] + "-r")
    # Usage records: the import's shape, within each allocation's period, imported after.
    for record in db.scalars(select(UsageRecord).order_by(UsageRecord.id).limit(2000)):
        a = by_id[record.allocation_id]
        assert (record.cluster, record.account) == (a.cluster, a.account)
        assert record.job_id.startswith("dg-") and record.gpus > 0
        assert record.started_at is not None and record.ended_at is not None
        assert record.started_at.date() >= a.starts_on
        assert record.started_at < record.ended_at <= record.imported_at <= now
    # Budgets: what the allocations take and hold, within the limits.
    for cr in db.scalars(select(CallResource)):
        taken = sum(a.hours for a in allocations if a.call_resource_id == cr.id)
        assert cr.allocated_hours == taken <= cr.budget_hours
    for resource in db.scalars(select(Resource)):
        held = sum(
            a.hours for a in allocations if a.resource_id == resource.id and a.state in HOLDING
        )
        assert resource.allocated_hours == held <= resource.capacity_hours
    # Requests: asked by the team's PI or co-PIs, decided by someone who may decide them.
    team: dict[int, dict[int, TeamRole]] = defaultdict(dict)
    for member in db.scalars(select(TeamMember)):
        team[member.proposal_id][member.user_id] = member.role
    scopes = {
        (r.user_id, r.resource_id, r.call_id): r.ceiling_hours
        for r in db.scalars(select(AllocationReviewer))
    }
    renewed = {a.renewed_from_id for a in allocations}
    requests = db.scalars(select(FollowUpRequest).order_by(FollowUpRequest.id)).all()
    initial = {a.id: a.award.hours for a in allocations if a.renewed_from_id is None}
    initial |= {r.renewal_id: r.hours_asked for r in requests if r.renewal_id is not None}
    changes: dict[int, int] = defaultdict(int)
    for r in requests:
        a = by_id[r.allocation_id]
        members = team[a.proposal_id]
        assert r.requested_by_id is not None
        assert members[r.requested_by_id] in (TeamRole.PI, TeamRole.CO_PI)
        assert r.created_at <= r.state_changed_at <= now
        if r.state == W.SUBMITTED:
            assert a.state in OPEN_TO[r.kind], (r, a)
            if r.kind == FollowUpKind.RENEWAL:
                assert a.id not in renewed
            else:
                assert a.ends_on >= today
        if r.kind == FollowUpKind.RETURN:
            assert r.state == W.APPROVED and r.decided_by_id == r.requested_by_id
        elif r.state in (W.APPROVED, W.DECLINED):
            assert r.decided_by_id not in members
            if r.decided_by_id not in officers:
                ceilings = [
                    ceiling
                    for (user, resource, call), ceiling in scopes.items()
                    if user == r.decided_by_id
                    and (resource == a.resource_id or call == a.call_resource.call_id)
                ]
                assert any(c is None or r.hours_asked <= c for c in ceilings), r
        if r.kind == FollowUpKind.RENEWAL and r.state == W.APPROVED:
            assert r.renewal_id is not None and r.decided_at is not None and r.months
            new = by_id[r.renewal_id]
            assert new.renewed_from_id == a.id and new.starts_on == r.decided_at.date()
            assert new.ends_on >= add_months(new.starts_on, r.months)
        if r.state == W.APPROVED and r.kind == FollowUpKind.SUPPLEMENT:
            changes[a.id] += r.hours_asked
        if r.state == W.APPROVED and r.kind == FollowUpKind.RETURN:
            changes[a.id] -= r.hours_asked
        if r.state == W.APPROVED and r.kind == FollowUpKind.EXTENSION:
            assert a.ends_on == r.ends_on
    # Approved requests changed their allocation: more hours, fewer, a later end.
    for a in allocations:
        assert a.hours == initial[a.id] + changes[a.id] >= 1, a
    # The trail: each allocation made, each request made and settled by whoever settled it.
    events = Counter(
        (e.action, e.object_id, e.actor_id)
        for e in db.scalars(
            select(AuditEvent).where(
                AuditEvent.object_type.in_(["allocations", "allocation_requests"])
            )
        )
    )
    made = {object_id for action, object_id, _ in events if action == "allocation.create"}
    assert made == set(by_id)
    for r in requests:
        assert events[("allocation_request.submit", r.id, r.requested_by_id)] == 1
        if r.state in (W.APPROVED, W.DECLINED):
            action = {W.APPROVED: "approve", W.DECLINED: "decline"}[r.state]
            if r.kind == FollowUpKind.RETURN:
                action = "give_back"
            assert events[(f"allocation_request.{action}", r.id, r.decided_by_id)] == 1
    # Final reports and outputs of the projects.
    for report in db.scalars(select(FinalReport)):
        assert report.due_on == project_end(report.proposal)
        if report.state in (ReportState.SUBMITTED, ReportState.ACCEPTED, ReportState.RETURNED):
            assert report.submitted_at is not None and len(report.summary) >= 50
        if report.state in (ReportState.ACCEPTED, ReportState.RETURNED):
            assert report.decided_by_id in officers and report.decided_at is not None
    for output in db.scalars(select(ReleasedOutput)):
        assert output.released_on <= today and output.url.startswith("https://")
        if output.planned_output_id is not None:
            planned = db.get_one(PlannedOutput, output.planned_output_id)
            assert (planned.proposal_id, planned.kind) == (output.proposal_id, output.kind)
    return list(allocations)


def test_awards_become_allocations_renewed_used_and_asked_about(app: Flask, db: Session) -> None:
    with app.app_context():
        ctx = _projects(db, 15)
        gen_allocations.generate(ctx)
        db.flush()
        db.expire_all()
        allocations = _check(db, {ctx.officer})
        assert ctx.counts["allocations"] == len(allocations) == ctx.scale.allocations
        assert ctx.counts["usage records"] == ctx.scale.usage_records
        assert db.scalar(select(func.count(UsageRecord.id))) == ctx.scale.usage_records
        states = Counter(a.state for a in allocations)
        assert states[S.ACTIVE] == max(states.values())
        assert {S.ACTIVE, S.EXPIRED, S.SUSPENDED} <= set(states)
        suspended = db.scalars(
            select(Institution).where(Institution.state == InstitutionState.SUSPENDED)
        ).one()
        stopped = [a for a in allocations if a.institution_id == suspended.id]
        assert stopped and all(a.state in (S.SUSPENDED, S.EXPIRED, S.PENDING) for a in stopped)
        requests = db.scalars(select(FollowUpRequest)).all()
        assert {r.state for r in requests} == set(W)
        assert {r.kind for r in requests} == set(FollowUpKind)
        waiting = [r for r in requests if r.state == W.SUBMITTED]
        assert waiting and ctx.counts["allocation requests"] == len(requests)
        assert db.scalar(select(func.count(FinalReport.id))) == 15
        # The busiest PI's projects (every third) hold a third of the allocations or more.
        theirs = [
            a
            for a in allocations
            if a.proposal.pi is not None and a.proposal.pi.id == ctx.personas["pi"]
        ]
        assert 3 * len(theirs) >= len(allocations)


def test_the_same_seed_plans_the_same_allocations(app: Flask, db: Session) -> None:
    with app.app_context():
        ctx = _projects(db, 6)

        def plan() -> list[tuple[object, ...]]:
            ctx.rng = random.Random(3)
            awards = gen_allocations._awards(ctx)
            planner = gen_allocations._Planner(ctx, awards)
            rooms, _ = gen_allocations._rooms(ctx, awards)
            return [
                (p.id, p.state, p.hours, p.starts_on, p.ends_on, p.account, len(p.requests))
                for p in planner.plan(rooms)
            ]

        assert plan() == plan()


def test_spread_keeps_the_total_and_the_caps() -> None:
    parts = gen_allocations.spread(100, [1.0, 2.0, 0.0, 7.0], [50, 10, 5, 200])
    assert parts[2] == 0 and parts[1] <= 10 and sum(parts) == 100
    assert gen_allocations.spread(100, [1.0, 1.0], [3, 4]) == [3, 4]
    assert sum(gen_allocations.spread(7, [1.0, 1.0, 1.0], [9, 9, 9])) == 7


def test_generated_after_the_proposals_generator_and_again(app: Flask, db: Session) -> None:
    """The whole generator at a small scale: every active project's awards are allocated; run
    again after more projects were approved, only theirs are, next to the first run's rows."""
    with app.app_context():
        scale = replace(Scale.of(0.004), allocations=60, usage_records=5000)
        first = generate(db, scale)
        ctx = _projects(db, 4)
        gen_allocations.generate(ctx)
        db.flush()
        db.expire_all()
        allocations = _check(db, {_officer(db), ctx.officer})
        assert first["allocations"] + ctx.counts["allocations"] == len(allocations)
        assert first["allocations"] > 0 and ctx.counts["allocations"] == ctx.scale.allocations
        records = first["usage records"] + ctx.counts["usage records"]
        assert records == db.scalar(select(func.count(UsageRecord.id)))


def test_without_active_projects_nothing_is_made(app: Flask, db: Session) -> None:
    with app.app_context():
        make_proposal(db, state=ProposalState.IN_REVIEW)
        ctx = Context(
            session=db,
            rng=random.Random(1),
            scale=Scale.of(0.001),
            now=utcnow(),
        )
        gen_allocations.generate(ctx)
        assert set(ctx.counts.values()) == {0}
        assert db.scalar(select(func.count(Allocation.id))) == 0


def _officer(db: Session) -> int:
    from portal.auth.models import Identity, User
    from portal.dev.datagen import PERSONAS

    return db.scalars(
        select(User.id).join(Identity).where(Identity.subject == PERSONAS["officer"])
    ).one()
