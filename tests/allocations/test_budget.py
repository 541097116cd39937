"""The finite budgets GPU-hours come out of — a call's budget on a resource and the resource's
capacity — can never be over-spent: each counter moves only by a guarded UPDATE whose row count
says whether the hours fit, a CHECK constraint is the backstop, and SQLite runs real transactions
that take the write lock as they begin.

The concurrency tests run on a live, committed database (SQLite file and PostgreSQL): 24 threads
lined up by a barrier and released together, each in a session (and transaction) of its own —
first taking hours straight from the counters, then approving whole proposals through
``decide_proposal`` (the approval's follow-up allocates the awards). Whatever the interleaving,
nothing is over-spent and each counter equals the sum of the allocations it holds.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
from flask import Flask
from sqlalchemy import func, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from portal.allocations import budget
from portal.allocations.models import HOLDING, Allocation, AllocationState
from portal.auth.models import Role, User
from portal.core.audit import AuditEvent
from portal.core.database import set_read_only
from portal.core.errors import ConflictError
from portal.extensions import db as flask_db
from portal.notifications.models import OutboxMessage
from portal.proposals.models import Award, CallResource, Proposal, ProposalState, Resource
from portal.proposals.services import decide_proposal
from tests.factories import make_call, make_proposal, make_resource, make_user
from tests.support.live import live_app, live_session
from tests.support.race import TRIES, race

#: The approvals released together in each concurrency test.
THREADS = 24
#: "… do not fit. Nothing was allocated." — what a refused approval is told.
DO_NOT_FIT = "do not fit. Nothing was allocated."


def counters(db: Session, cr: CallResource) -> tuple[int, int]:
    """(the call's allocated hours, the resource's), as the database has them now."""
    row = db.execute(
        select(CallResource.allocated_hours, Resource.allocated_hours)
        .join(Resource, Resource.id == CallResource.resource_id)
        .where(CallResource.id == cr.id)
    ).one()
    return int(row[0]), int(row[1])


# --- the guarded counters, one transaction at a time ----------------------------------------------


def test_taking_hours_moves_both_counters_and_giving_back_moves_what_it_says(db: Session) -> None:
    call = make_call(db, budget_hours=1000, max_request_hours=1000)
    cr = call.resources[0]
    budget.take(db, cr, 600)
    budget.take(db, cr, 400)
    assert counters(db, cr) == (1000, 1000)
    # Expired hours go back to the resource only; returned hours to the call's budget too.
    budget.give_back(db, cr, 300, to_call=False)
    assert counters(db, cr) == (1000, 700)
    budget.give_back(db, cr, 200, to_call=True)
    assert counters(db, cr) == (800, 500)
    # The objects read the new values (the counters were expired, not left stale).
    assert (cr.allocated_hours, cr.resource.allocated_hours) == (800, 500)


@pytest.mark.parametrize("hours", [0, -5])
def test_only_a_positive_number_of_hours_is_taken(db: Session, hours: int) -> None:
    cr = make_call(db).resources[0]
    with pytest.raises(ValueError, match="positive"):
        budget.take(db, cr, hours)
    assert counters(db, cr) == (0, 0)


def test_hours_over_the_calls_budget_are_refused_with_what_is_left(db: Session) -> None:
    call = make_call(db, budget_hours=1000, max_request_hours=1000)
    cr = call.resources[0]
    budget.take(db, cr, 800)
    with pytest.raises(ConflictError) as refused:
        budget.take(db, cr, 201)
    assert str(refused.value) == (
        f"The call's budget on {cr.resource.name} has 200 GPU-hours left; 201 do not fit. "
        "Nothing was allocated."
    )
    assert counters(db, cr) == (800, 800)
    budget.take(db, cr, 200)  # exactly what is left fits
    assert counters(db, cr) == (1000, 1000)


def test_hours_over_the_resources_capacity_are_refused_even_within_the_calls_budget(
    db: Session,
) -> None:
    """Two calls share a resource: each call's budget has room, the resource has not."""
    resource = make_resource(db, capacity_hours=1500)
    first, second = make_call(db, resources=0), make_call(db, resources=0)
    crs = []
    for call in (first, second):
        cr = CallResource(resource=resource, budget_hours=1000, max_request_hours=1000)
        call.resources.append(cr)
        crs.append(cr)
    db.flush()
    budget.take(db, crs[0], 1000)
    # The call's counter moved before the resource's refused: the caller's transaction (here a
    # savepoint) is rolled back, as a view's is when its service raises.
    with pytest.raises(ConflictError) as refused, db.begin_nested():
        budget.take(db, crs[1], 501)
    assert str(refused.value) == (
        f"{resource.name} has 500 GPU-hours of capacity left; 501 do not fit. Nothing was allocated."
    )
    assert counters(db, crs[1]) == (0, 1000)
    budget.take(db, crs[1], 500)
    assert counters(db, crs[1]) == (500, 1500)


@pytest.mark.parametrize(
    ("table", "column_limit"),
    [("call_resources", "budget_hours"), ("resources", "capacity_hours")],
)
@pytest.mark.parametrize("past", ["over", "below zero"])
def test_the_database_refuses_a_counter_outside_its_limits(
    db: Session, table: str, column_limit: str, past: str
) -> None:
    """The backstop: even a write that skips the guarded UPDATE cannot over-spend."""
    cr = make_call(db).resources[0]
    row_id = cr.id if table == "call_resources" else cr.resource_id
    value = f"{column_limit} + 1" if past == "over" else "-1"
    with pytest.raises(IntegrityError), db.begin_nested():
        db.execute(
            text(f"UPDATE {table} SET allocated_hours = {value} WHERE id = :id"), {"id": row_id}
        )
    assert counters(db, cr) == (0, 0)


# --- SQLite's transactions -------------------------------------------------------------------------


def test_sqlite_transactions_take_the_write_lock_as_they_begin(tmp_path: Path) -> None:
    """Why the guarded UPDATE can rely on SQLite: pysqlite's own transaction handling is off and
    each write transaction begins with ``BEGIN IMMEDIATE`` (portal/core/database.py), so a second
    writer cannot even begin while the first is open (probed without waiting: a zero busy
    timeout); a read-only context begins a deferred transaction, which blocks no writer."""
    with live_app("sqlite", tmp_path) as app:
        path = app.config["DATABASE_URL"].removeprefix("sqlite:///")
        probe = sqlite3.connect(path, timeout=0, isolation_level=None)

        def another_writer_may_begin() -> bool:
            try:
                probe.execute("BEGIN IMMEDIATE")
            except sqlite3.OperationalError as e:
                assert "locked" in str(e)
                return False
            probe.execute("ROLLBACK")
            return True

        try:
            with live_session(app) as s:
                raw = s.connection().connection.dbapi_connection
                assert isinstance(raw, sqlite3.Connection)
                assert raw.isolation_level is None  # the driver emits no BEGIN of its own
                assert raw.in_transaction  # the portal's BEGIN ran, before any write
                s.execute(select(func.count(Resource.id))).scalar_one()
                assert not another_writer_may_begin()
            assert another_writer_may_begin()

            set_read_only(True)
            try:
                with app.app_context():
                    s = Session(flask_db.engine)
                    s.execute(select(func.count(Resource.id))).scalar_one()
                    assert another_writer_may_begin()
                    s.close()
            finally:
                set_read_only(False)
        finally:
            probe.close()


# --- concurrency: 24 threads at once ---------------------------------------------------------------


def _budgets(app: Flask, *, budget_hours: int, capacity_hours: int) -> int:
    """A resource and one call's budget on it, committed; the call resource's id."""
    with live_session(app) as s:
        resource = make_resource(s, capacity_hours=capacity_hours)
        call = make_call(s, resources=0)
        cr = CallResource(resource=resource, budget_hours=budget_hours, max_request_hours=7)
        call.resources.append(cr)
        s.flush()
        return cr.id


@pytest.mark.parametrize("binding", ["budget", "capacity"])
def test_24_threads_taking_hours_at_once_never_overspend(race_app: Flask, binding: str) -> None:
    """300+ takes of 7 GPU-hours against 1,000 (the call's budget, or the resource's capacity):
    exactly 142 fit (994 hours) and the others are refused, every run, on both databases."""
    limit, roomy = 1000, 1_000_000
    cr_id = _budgets(
        race_app,
        budget_hours=limit if binding == "budget" else roomy,
        capacity_hours=limit if binding == "capacity" else roomy,
    )
    per_thread = 13  # 24 threads, 13 each: 312 tries for 142 places

    def taker() -> list[bool]:
        took = []
        for _ in range(per_thread):
            try:
                with live_session(race_app) as s:
                    budget.take(s, s.get_one(CallResource, cr_id), 7)
                took.append(True)
            except ConflictError as e:
                assert str(e).endswith(DO_NOT_FIT)
                took.append(False)
        return took

    results = race(*[taker for _ in range(THREADS)])

    taken = sum(sum(r) for r in results)
    with live_session(race_app) as s:
        budgeted, held = counters(s, s.get_one(CallResource, cr_id))
    assert taken == limit // 7 == 142
    assert budgeted == held == 7 * taken == 994


def _shared_resource_calls(app: Flask) -> tuple[int, list[int], dict[int, int], int]:
    """A resource of 9,000 GPU-hours offered by two calls with 6,000 each, and 12 proposals in
    review in each call asking 1,000 GPU-hours: (resource id, the two call resources' ids,
    proposal id → its call resource's id, a program officer's id)."""
    with live_session(app) as s:
        resource = make_resource(s, capacity_hours=9000)
        crs = []
        for _ in range(2):
            call = make_call(s, resources=0)
            cr = CallResource(resource=resource, budget_hours=6000, max_request_hours=1000)
            call.resources.append(cr)
            s.flush()
            crs.append(cr)
        proposals = {
            make_proposal(s, call=cr.call, state=ProposalState.IN_REVIEW).id: cr.id
            for cr in crs
            for _ in range(THREADS // 2)
        }
        officer = make_user(s, Role.PROGRAM_OFFICER)
        return resource.id, [cr.id for cr in crs], proposals, officer.id


def _approval(app: Flask, proposal_id: int, cr_id: int, officer_id: int) -> Callable[[], str]:
    """Approving one proposal with 700 GPU-hours, in a transaction of its own: "" when it committed,
    else what the officer was told (the transaction rolled back)."""

    def approve() -> str:
        try:
            with live_session(app) as s:
                decide_proposal(
                    s,
                    s.get_one(Proposal, proposal_id),
                    "approve",
                    actor=s.get_one(User, officer_id),
                    awards={cr_id: 700},
                )
        except ConflictError as e:
            return str(e)
        return ""

    return approve


#: Rounds of 24 approvals per database.
ROUNDS = 3


def test_24_officers_approving_at_once_allocate_inside_both_budgets(race_app: Flask) -> None:
    """24 approvals of 700 GPU-hours released together, two calls (6,000 each) on one resource
    (9,000): 12 fit — at most 8 per call and 12 on the resource, and no approval can be refused
    while either still has room, so exactly 12. The refused are told why and leave no trace: their
    proposals are still in review with no awards, allocations, audit event or mail."""
    for _ in range(ROUNDS):
        resource_id, cr_ids, proposals, officer_id = _shared_resource_calls(race_app)

        told = race(
            *[_approval(race_app, pid, cr_id, officer_id) for pid, cr_id in proposals.items()]
        )

        outcome = dict(zip(proposals, told, strict=True))
        approved = {pid for pid, said in outcome.items() if not said}
        refused = set(proposals) - approved
        assert len(approved) == 12, outcome
        assert all(DO_NOT_FIT in outcome[pid] for pid in refused), outcome
        with live_session(race_app) as s:
            allocations = s.scalars(
                select(Allocation).where(Allocation.resource_id == resource_id)
            ).all()
            assert {a.proposal_id for a in allocations} == approved
            assert all(a.hours == 700 and a.state in HOLDING for a in allocations)
            resource = s.get_one(Resource, resource_id)
            assert resource.allocated_hours == sum(a.hours for a in allocations) == 8400
            assert resource.allocated_hours <= resource.capacity_hours
            for cr_id in cr_ids:
                cr = s.get_one(CallResource, cr_id)
                mine = [a for a in allocations if a.call_resource_id == cr_id]
                assert cr.allocated_hours == sum(a.hours for a in mine) <= cr.budget_hours
                assert len(mine) <= 8
            states = dict(
                s.execute(
                    select(Proposal.id, Proposal.state).where(Proposal.id.in_(proposals))
                ).all()
            )
            assert {states[p] for p in approved} == {ProposalState.ACTIVE}
            assert {states[p] for p in refused} == {ProposalState.IN_REVIEW}
            assert not s.scalars(select(Award).where(Award.proposal_id.in_(refused))).all()
            decided = s.scalars(
                select(AuditEvent.object_id).where(
                    AuditEvent.action == "proposal.approve",
                    AuditEvent.object_id.in_(proposals),
                )
            ).all()
            assert set(decided) == approved and len(decided) == len(approved)
            mailed = {
                m.context["url"].rsplit("/", 1)[1]
                for m in s.scalars(
                    select(OutboxMessage).where(OutboxMessage.template == "proposals/decided")
                )
            }
            assert not {str(p) for p in refused} & mailed


def test_two_officers_approving_one_proposal_allocate_it_once(race_app: Flask) -> None:
    """One award per decision: of two approvals at once, one stands and allocates; the other is
    told the proposal was decided, and nothing is taken twice."""
    for attempt in range(TRIES):
        with live_session(race_app) as s:
            proposal = make_proposal(s, state=ProposalState.IN_REVIEW)
            cr = proposal.requests[0].call_resource
            officers = [make_user(s, Role.PROGRAM_OFFICER).id for _ in range(2)]
            ids = (proposal.id, cr.id)
        proposal_id, cr_id = ids
        first, second = (_approval(race_app, proposal_id, cr_id, o) for o in officers)
        told = race(first, second) if attempt % 2 else race(second, first)

        assert sorted(bool(t) for t in told) == [False, True], told
        (loser,) = [t for t in told if t]
        assert "already changed" in loser or "not possible while" in loser, loser
        with live_session(race_app) as s:
            (allocation,) = s.scalars(
                select(Allocation).where(Allocation.proposal_id == proposal_id)
            ).all()
            assert allocation.state == AllocationState.PENDING
            assert counters(s, s.get_one(CallResource, cr_id)) == (700, 700)
            assert (
                s.scalar(select(func.count(Award.id)).where(Award.proposal_id == proposal_id)) == 1
            )
