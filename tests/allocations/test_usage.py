"""Usage from the clusters: Slurm ``sacct --parsable2`` output read into jobs (columns found by the
header, job steps skipped, GPUs from ``AllocTRES``, malformed lines reported by number) and
charged to allocations idempotently by (cluster, job id) — the same file twice charges once, a
re-reported job charges only the difference, also when two imports run at the same moment."""

from __future__ import annotations

import datetime as dt
import gc
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import event, func, select
from sqlalchemy.orm import Session

from portal.allocations import services, usage
from portal.allocations.models import SECONDS_PER_HOUR, Allocation, AllocationState, UsageRecord
from portal.allocations.usage import ImportReport, Job, Malformed, parse_sacct, record_usage
from portal.allocations.workflow import ALLOCATION_WORKFLOW
from portal.auth.models import Role
from portal.core.audit import AuditEvent
from portal.extensions import db as _db
from portal.notifications.models import OutboxMessage
from tests.factories import make_allocation, make_user
from tests.support.live import live_session
from tests.support.mail import outbox
from tests.support.race import TRIES, race, report

HEADER = "JobID|Account|Cluster|AllocTRES|ElapsedRaw|Start|End|State"
TRES = "billing=8,cpu=8,gres/gpu={gpus},mem=64G,node=1"


@pytest.fixture(autouse=True)
def _app_context(request: pytest.FixtureRequest) -> Iterator[None]:
    """Tests on the shared database run in an app context: mails about allocations link to their
    pages (absolute URLs from the configuration). Reading needs no database, and the races have
    their own app (``race_app``)."""
    if "db" not in request.fixturenames:
        yield
        return
    app: Flask = request.getfixturevalue("app")
    with app.app_context():
        yield


def row(
    job_id: str,
    allocation: Allocation | tuple[str, str],
    *,
    gpus: int = 4,
    elapsed: int = 3600,
    start: str = "2026-11-01T10:00:00",
    end: str = "2026-11-01T11:00:00",
    state: str = "COMPLETED",
) -> str:
    """One line of ``sacct --parsable2`` in HEADER's column order."""
    cluster, account = (
        allocation if isinstance(allocation, tuple) else (allocation.cluster, allocation.account)
    )
    return "|".join(
        [job_id, account, cluster, TRES.format(gpus=gpus), str(elapsed), start, end, state]
    )


def sacct(*rows: str, header: str = HEADER) -> list[str]:
    """A file's lines, as ``open()`` yields them."""
    return [line + "\n" for line in (header, *rows)]


def parsed(lines: list[str], **kw: Any) -> list[Job | Malformed]:
    return list(parse_sacct(lines, **kw))


def jobs_of(lines: list[str]) -> list[Job]:
    return [j for j in parse_sacct(lines) if isinstance(j, Job)]


def used(db: Session, allocation: Allocation) -> int:
    db.refresh(allocation)
    return allocation.used_gpu_seconds


# --- Reading sacct ------------------------------------------------------------------------------


def test_columns_are_found_by_the_header_in_any_order() -> None:
    lines = [
        "State|ElapsedRaw|AllocTRES|End|Cluster|Start|Account|JobID\n",
        "COMPLETED|7200|cpu=4,gres/gpu=2,mem=8G|2026-11-01T12:00:00|alps|2026-11-01T10:00:00|atom-7-h100|4242\n",
    ]
    (job,) = parsed(lines)
    assert job == Job(
        cluster="alps",
        job_id="4242",
        account="atom-7-h100",
        gpus=2,
        elapsed_seconds=7200,
        started_at=dt.datetime(2026, 11, 1, 10, tzinfo=dt.UTC),
        ended_at=dt.datetime(2026, 11, 1, 12, tzinfo=dt.UTC),
        state="COMPLETED",
    )
    assert job.gpu_seconds == 2 * 7200


def test_job_steps_repeat_their_job_and_are_skipped_and_counted() -> None:
    at = ("alps", "atom-1-h100")
    report = ImportReport()
    items = parsed(
        sacct(
            row("100", at),
            row("100.batch", at),
            row("100.extern", at),
            row("100.0", at),
            row("101_3", at),  # an array task is a job of its own
            row("101_3.0", at),
        ),
        report=report,
    )
    assert [j.job_id for j in items if isinstance(j, Job)] == ["100", "101_3"]
    assert (report.lines, report.steps, report.malformed) == (7, 4, [])


@pytest.mark.parametrize(
    ("tres", "gpus"),
    [
        ("billing=8,cpu=8,gres/gpu=4,mem=64G,node=1", 4),
        ("cpu=8,gres/gpu:h100=4,gres/gpu=4,mem=64G", 4),
        ("cpu=8,gres/gpu:a100=2,gres/gpu:h100=1", 3),
        ("cpu=8,gres/gpu=2,gres/gpumem=80G,gres/gpuutil=90", 2),
        ("cpu=8,mem=64G,node=1", 0),
        ("", 0),
    ],
)
def test_gpus_are_read_from_gres_gpu_in_alloc_tres(tres: str, gpus: int) -> None:
    (job,) = parsed(sacct(f"7|atom-1-h100|alps|{tres}|60|Unknown|Unknown|PENDING"))
    assert isinstance(job, Job)
    assert job.gpus == gpus


def test_unknown_times_are_none_and_known_ones_utc() -> None:
    (running,) = parsed(
        sacct(row("9", ("alps", "a"), start="2026-11-01T10:00:00", end="Unknown", state="RUNNING"))
    )
    (pending,) = parsed(sacct(row("10", ("alps", "a"), start="Unknown", end="None", elapsed=0)))
    assert isinstance(running, Job) and isinstance(pending, Job)
    assert running.started_at == dt.datetime(2026, 11, 1, 10, tzinfo=dt.UTC)
    assert running.ended_at is None
    assert (pending.started_at, pending.ended_at) == (None, None)


def test_malformed_lines_are_reported_with_their_line_numbers_and_the_rest_is_read() -> None:
    at = ("alps", "atom-1-h100")
    report = ImportReport()
    lines = sacct(
        row("1", at),
        "2|atom-1-h100|alps|gres/gpu=4|60",  # line 3: too few fields
        row("3", at).replace("|3600|", "|1:00:00|"),  # line 4: not ElapsedRaw
        row("4", at, start="yesterday"),  # line 5
        row("5", at).replace("gres/gpu=4", "gres/gpu=four"),  # line 6
        row("6", ("alps", "")),  # line 7: no account
        row("7", at, elapsed=-5),  # line 8
        "",  # line 9: blank lines are not malformed
        row("8", at),  # line 10
    )
    items = parsed(lines, source="usage.txt", report=report)

    assert [j.job_id for j in items if isinstance(j, Job)] == ["1", "8"]
    bad = [m for m in items if isinstance(m, Malformed)]
    assert bad == report.malformed
    assert [m.line for m in bad] == [3, 4, 5, 6, 7, 8]
    assert [str(m) for m in bad] == [
        "usage.txt:3: 5 fields where the header has 8",
        "usage.txt:4: ElapsedRaw is not a whole number of seconds: '1:00:00'",
        "usage.txt:5: Start is not a time: 'yesterday'",
        "usage.txt:6: gres/gpu is not a whole number: 'four'",
        "usage.txt:7: no account",
        "usage.txt:8: ElapsedRaw is not a whole number of seconds: '-5'",
    ]
    assert bad[0].text == "2|atom-1-h100|alps|gres/gpu=4|60"
    assert report.lines == 10


def test_a_header_without_the_needed_columns_is_one_malformed_line_and_the_end() -> None:
    at = ("alps", "atom-1-h100")
    no_header = parsed([row("1", at) + "\n", row("2", at) + "\n"])
    no_gpus_column = parsed(sacct(row("1", at), header=HEADER.replace("AllocTRES", "ReqTRES")))
    for items in (no_header, no_gpus_column):
        (bad,) = items
        assert isinstance(bad, Malformed)
        assert bad.line == 1
        assert "the header line has no" in bad.reason
    assert "AllocTRES" in str(no_gpus_column[0])


def test_parsable_output_with_a_trailing_separator_or_a_byte_order_mark_is_read_too() -> None:
    lines = [line.rstrip("\n") + "|\r\n" for line in sacct(row("1", ("alps", "a"), gpus=8))]
    lines[0] = "\ufeff" + lines[0]
    (job,) = parsed(lines)
    assert isinstance(job, Job)
    assert (job.job_id, job.gpus, job.state) == ("1", 8, "COMPLETED")


# --- Charging -----------------------------------------------------------------------------------


def test_jobs_are_charged_gpus_times_elapsed_to_the_allocation_of_their_account(
    db: Session,
) -> None:
    a = make_allocation(db, hours=1000)
    b = make_allocation(db, hours=1000)
    assert a.state == AllocationState.ACTIVE

    result = record_usage(
        db,
        jobs_of(
            sacct(
                row("1", a, gpus=4, elapsed=3600),
                row("2", a, gpus=8, elapsed=1800),
                row("3", b, gpus=1, elapsed=60),
            )
        ),
    )

    assert used(db, a) == 4 * 3600 + 8 * 1800
    assert used(db, b) == 60
    assert (result.jobs, result.new, result.updated, result.unchanged) == (3, 3, 0, 0)
    assert result.gpu_seconds == 4 * 3600 + 8 * 1800 + 60
    assert result.gpu_hours == pytest.approx(8.0 + 60 / 3600)
    record = db.scalars(select(UsageRecord).where(UsageRecord.job_id == "2")).one()
    assert (record.allocation_id, record.gpus, record.elapsed_seconds, record.job_state) == (
        a.id,
        8,
        1800,
        "COMPLETED",
    )
    assert record.ended_at == dt.datetime(2026, 11, 1, 11, tzinfo=dt.UTC)
    (ev,) = db.scalars(select(AuditEvent).where(AuditEvent.action == "usage.import"))
    assert (ev.actor_id, ev.details["new"], ev.details["gpu_seconds"]) == (
        None,
        3,
        result.gpu_seconds,
    )


def test_the_same_file_twice_charges_once(db: Session) -> None:
    a = make_allocation(db)
    lines = sacct(row("1", a, gpus=4), row("2", a, gpus=2), row("2.batch", a, gpus=2))

    first = record_usage(db, jobs_of(lines))
    second = record_usage(db, jobs_of(lines))

    assert used(db, a) == 6 * 3600
    assert (first.new, first.unchanged, first.gpu_seconds) == (2, 0, 6 * 3600)
    assert (second.new, second.updated, second.unchanged, second.gpu_seconds) == (0, 0, 2, 0)
    assert db.scalar(select(func.count()).select_from(UsageRecord)) == 2
    assert len(db.scalars(select(AuditEvent).where(AuditEvent.action == "usage.import")).all()) == 2


def test_a_re_reported_longer_job_charges_only_the_difference(db: Session) -> None:
    a = make_allocation(db)
    record_usage(
        db, jobs_of(sacct(row("1", a, gpus=4, elapsed=600, end="Unknown", state="RUNNING")))
    )
    assert used(db, a) == 4 * 600

    again = record_usage(db, jobs_of(sacct(row("1", a, gpus=4, elapsed=3600))))

    assert used(db, a) == 4 * 3600
    assert (again.new, again.updated, again.gpu_seconds) == (0, 1, 4 * 3000)
    record = db.scalars(select(UsageRecord).where(UsageRecord.job_id == "1")).one()
    db.refresh(record)
    assert (record.elapsed_seconds, record.job_state) == (3600, "COMPLETED")
    assert record.ended_at == dt.datetime(2026, 11, 1, 11, tzinfo=dt.UTC)


def test_a_re_reported_shorter_job_gives_the_difference_back(db: Session) -> None:
    a = make_allocation(db)
    record_usage(db, jobs_of(sacct(row("1", a, gpus=4, elapsed=3600))))
    shorter = record_usage(db, jobs_of(sacct(row("1", a, gpus=2, elapsed=3600))))
    assert used(db, a) == 2 * 3600
    assert (shorter.updated, shorter.gpu_seconds) == (1, -2 * 3600)


def test_of_two_reports_of_a_job_in_one_import_the_last_counts(db: Session) -> None:
    a = make_allocation(db)
    result = record_usage(
        db,
        jobs_of(sacct(row("1", a, elapsed=600), row("2", a, elapsed=60), row("1", a, elapsed=900))),
    )
    assert used(db, a) == 4 * 900 + 4 * 60
    assert (result.jobs, result.repeated, result.new) == (3, 1, 2)


def test_a_job_moved_to_another_account_leaves_the_first_allocation(db: Session) -> None:
    """Slurm lets an administrator change a job's account: its usage moves with it."""
    a = make_allocation(db)
    b = make_allocation(db)
    b.cluster = a.cluster  # the same cluster (two GPU classes, say)
    db.flush()
    record_usage(db, jobs_of(sacct(row("1", a, gpus=2))))
    moved = record_usage(db, jobs_of(sacct(row("1", b, gpus=2))))
    assert (used(db, a), used(db, b)) == (0, 2 * 3600)
    assert (moved.updated, moved.gpu_seconds) == (1, 0)


def test_unknown_accounts_are_listed_with_their_job_counts(db: Session) -> None:
    a = make_allocation(db)
    result = record_usage(
        db,
        jobs_of(
            sacct(
                row("1", a),
                row("2", (a.cluster, "someone-else")),
                row("3", (a.cluster, "someone-else")),
                row("4", ("other-cluster", a.account)),
            )
        ),
    )
    assert result.unknown == {(a.cluster, "someone-else"): 2, ("other-cluster", a.account): 1}
    assert (result.unknown_jobs, result.new) == (3, 1)
    assert used(db, a) == 4 * 3600
    assert db.scalar(select(func.count()).select_from(UsageRecord)) == 1


def test_jobs_without_gpus_are_skipped_and_counted(db: Session) -> None:
    a = make_allocation(db)
    result = record_usage(
        db,
        jobs_of(sacct(row("1", a, gpus=0), row("2", (a.cluster, "cpu-only"), gpus=0), row("3", a))),
    )
    assert (result.no_gpus, result.new, result.unknown) == (2, 1, {})
    assert used(db, a) == 4 * 3600


def test_usage_reaching_the_hours_uses_the_allocation_up_and_tells_the_team(db: Session) -> None:
    a = make_allocation(db, hours=10)
    record_usage(db, jobs_of(sacct(row("1", a, gpus=4, elapsed=3600))))  # 4 of 10 hours
    assert a.state == AllocationState.ACTIVE
    assert outbox(db, "allocations/stopped") == []

    result = record_usage(db, jobs_of(sacct(row("2", a, gpus=8, elapsed=3600))))  # 12 of 10

    db.refresh(a)
    assert a.state == AllocationState.EXHAUSTED
    assert a.used_gpu_seconds == 12 * SECONDS_PER_HOUR
    assert result.exhausted == [(a.cluster, a.account)]
    pi = a.proposal.pi
    assert pi is not None
    assert [m.recipient_id for m in outbox(db, "allocations/stopped")] == [pi.id]
    assert db.scalars(
        select(AuditEvent.action).where(
            AuditEvent.object_type == "allocations", AuditEvent.object_id == a.id
        )
    ).all()[-1:] == ["allocation.exhaust"]

    more = record_usage(db, jobs_of(sacct(row("3", a, gpus=1, elapsed=3600))))
    assert (more.new, more.exhausted, more.not_active) == (
        1,
        [],
        {(a.cluster, a.account): ("exhausted", 1)},
    )
    assert len(outbox(db, "allocations/stopped")) == 1


def test_allocations_that_are_not_active_still_record_usage_and_are_reported(db: Session) -> None:
    """The jobs ran: their usage counts whatever the allocation's state now."""
    pending = make_allocation(db, usable=False)
    suspended = make_allocation(db)
    ALLOCATION_WORKFLOW.run(
        db, suspended, "suspend", actor=make_user(db, Role.PROGRAM_OFFICER), reason="Audit."
    )
    assert pending.state == AllocationState.PENDING

    result = record_usage(
        db, jobs_of(sacct(row("1", pending), row("2", suspended), row("3", suspended)))
    )

    assert (used(db, pending), used(db, suspended)) == (4 * 3600, 8 * 3600)
    assert result.not_active == {
        (pending.cluster, pending.account): ("pending", 1),
        (suspended.cluster, suspended.account): ("suspended", 2),
    }
    assert (pending.state, suspended.state) == (AllocationState.PENDING, AllocationState.SUSPENDED)


def test_progress_is_told_of_every_job(db: Session) -> None:
    a = make_allocation(db)
    told: list[int] = []
    lines = sacct(*(row(str(i), a) for i in range(7)), row("x", (a.cluster, "nobody")))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(usage, "BATCH", 3)
        record_usage(db, jobs_of(lines), progress=told.append)
    assert told == [1, 3, 3, 1]


def test_an_import_charges_once_per_allocation_and_batch_in_a_fixed_number_of_statements(
    db: Session, count_queries: Callable[[Callable[[], object]], int]
) -> None:
    """Bulk: the statements an import sends grow with its batches, never with its jobs."""
    a = make_allocation(db)
    b = make_allocation(db)

    def import_(first: int, n: int) -> Callable[[], object]:
        ids = range(first, first + n)
        lines = sacct(
            *(row(str(i), a, elapsed=1) for i in ids), *(row(f"b{i}", b, elapsed=1) for i in ids)
        )
        return lambda: record_usage(db, jobs_of(lines))

    small, large = count_queries(import_(0, 5)), count_queries(import_(1000, 500))
    assert small == large
    assert used(db, a) == 4 * 505
    # again, now half of them re-reported longer: the updates are one statement per batch too
    lines = sacct(*(row(str(i), a, elapsed=2 if i % 2 else 1) for i in range(1000, 1500)))
    updates = count_queries(lambda: record_usage(db, jobs_of(lines)))
    assert updates <= small
    assert used(db, a) == 4 * 505 + 4 * 250


def test_an_import_over_many_allocations_sends_as_many_statements_as_over_one(
    db: Session, count_queries: Callable[[Callable[[], object]], int]
) -> None:
    """A batch holds the jobs of every allocation: one read of their records, one insert and one
    charge of all the allocations, whatever their number."""
    one = [make_allocation(db)]
    five = [make_allocation(db) for _ in range(5)]

    def import_(allocations: list[Allocation], prefix: str) -> Callable[[], object]:
        lines = sacct(*(row(f"{prefix}{i}", a, elapsed=1) for i, a in enumerate(allocations * 3)))
        return lambda: record_usage(db, jobs_of(lines))

    assert count_queries(import_(one, "one")) == count_queries(import_(five, "five"))
    assert [used(db, a) for a in one + five] == [4 * 3] * 6


def test_charging_many_allocations_uses_up_only_the_active_ones_reaching_their_hours(
    db: Session,
) -> None:
    full = make_allocation(db, hours=10)
    room = make_allocation(db, hours=10)
    pending = make_allocation(db, hours=10, usable=False)

    used_up = services.charge_many(
        db, {room.id: 9 * SECONDS_PER_HOUR, full.id: 10 * SECONDS_PER_HOUR, pending.id: 36_000}
    )

    assert used_up == [full]
    assert (full.state, room.state, pending.state) == (
        AllocationState.EXHAUSTED,
        AllocationState.ACTIVE,
        AllocationState.PENDING,
    )
    # the session's objects show the new usage without being refreshed by hand
    assert (full.used_gpu_seconds, room.used_gpu_seconds, pending.used_gpu_seconds) == (
        10 * SECONDS_PER_HOUR,
        9 * SECONDS_PER_HOUR,
        36_000,
    )
    pi = full.proposal.pi
    assert pi is not None
    assert [m.recipient_id for m in outbox(db, "allocations/stopped")] == [pi.id]
    # giving back (a job re-reported shorter) and nothing at all use nothing up
    assert services.charge_many(db, {room.id: -SECONDS_PER_HOUR, pending.id: 0}) == []
    assert (used(db, room), used(db, pending)) == (8 * SECONDS_PER_HOUR, 36_000)


def test_times_are_kept_in_utc_and_the_same_instant_reported_again_is_unchanged(
    db: Session,
) -> None:
    a = make_allocation(db)
    paris = dt.timezone(dt.timedelta(hours=1))
    start = dt.datetime(2026, 11, 1, 11, tzinfo=paris)  # 10:00 UTC
    record_usage(db, [Job(a.cluster, "1", a.account, 2, 600, start, None, "RUNNING")])
    record = db.scalars(select(UsageRecord).where(UsageRecord.job_id == "1")).one()
    assert record.started_at == dt.datetime(2026, 11, 1, 10, tzinfo=dt.UTC)
    assert record.started_at.utcoffset() == dt.timedelta(0)

    in_utc = start.astimezone(dt.UTC)
    again = record_usage(db, [Job(a.cluster, "1", a.account, 2, 600, in_utc, None, "RUNNING")])
    assert (again.unchanged, again.updated) == (1, 0)

    end = dt.datetime(2026, 11, 1, 10, 10, tzinfo=dt.UTC)
    ended = record_usage(db, [Job(a.cluster, "1", a.account, 2, 600, in_utc, end, "COMPLETED")])
    assert (ended.unchanged, ended.updated, ended.gpu_seconds) == (0, 1, 0)
    db.refresh(record)
    assert (record.ended_at, record.job_state) == (end, "COMPLETED")


def test_what_the_reader_and_the_import_remember_never_changes_what_they_read(
    db: Session, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The TRES values and times remembered are forgotten when there are too many: read again,
    never mixed up."""
    monkeypatch.setattr(usage, "REMEMBERED", 2)
    a = make_allocation(db)
    lines = sacct(
        *(
            row(
                str(i),
                a,
                gpus=1 + i % 3,
                elapsed=60,
                start=f"2026-11-01T10:0{i}:00",
                end=f"2026-11-01T10:0{i}:30" if i % 2 else "Unknown",
            )
            for i in range(8)
        )
    )
    jobs = jobs_of(lines)
    assert [j.gpus for j in jobs] == [1 + i % 3 for i in range(8)]
    assert [j.started_at for j in jobs] == [
        dt.datetime(2026, 11, 1, 10, i, tzinfo=dt.UTC) for i in range(8)
    ]
    assert [j.ended_at is None for j in jobs] == [i % 2 == 0 for i in range(8)]

    first = record_usage(db, jobs)
    again = record_usage(db, jobs_of(lines))

    assert (first.new, again.unchanged, again.updated) == (8, 8, 0)
    assert db.scalars(
        select(UsageRecord.started_at)
        .where(UsageRecord.allocation_id == a.id)
        .order_by(UsageRecord.started_at)
    ).all() == [j.started_at for j in jobs]


def test_the_cycle_collector_is_paused_during_a_bulk_step_and_as_it_was_after() -> None:
    assert gc.isenabled()
    with usage.collector_paused():
        assert not gc.isenabled()
    assert gc.isenabled()
    with pytest.raises(RuntimeError), usage.collector_paused():
        raise RuntimeError
    assert gc.isenabled()
    gc.disable()
    try:
        with usage.collector_paused():
            pass
        assert not gc.isenabled()  # whoever turned it off keeps it off
    finally:
        gc.enable()


# --- Two imports at the same moment -------------------------------------------------------------


def _racing_imports(app: Flask, lines: list[str]) -> list[ImportReport]:
    """Import ``lines`` twice at the same moment, each in its own committed transaction.

    Both threads start together (a barrier). On PostgreSQL a second barrier holds each just
    before it locks the allocations, so both have read what they need before either writes:
    without the lock both would find no records and insert the same jobs (one failing on the
    unique key), or both update one job and charge the difference twice. SQLite runs one writing
    transaction at a time (``BEGIN IMMEDIATE``), so a barrier inside the transaction would wait
    for ever there: the start barrier is the race."""
    with app.app_context():
        engine = _db.engine
    at_lock = threading.Barrier(2)
    passed = threading.local()

    def hold_before_lock(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if "FOR UPDATE" in statement and not getattr(passed, "done", False):
            passed.done = True
            at_lock.wait()

    def one() -> ImportReport:
        try:
            with live_session(app) as s:
                return record_usage(s, jobs_of(lines))
        except BaseException:
            at_lock.abort()  # the other import is not left waiting for this one
            raise

    on_postgres = engine.dialect.name == "postgresql"
    if on_postgres:
        event.listen(engine, "before_cursor_execute", hold_before_lock)
    try:
        return race(one, one)
    finally:
        if on_postgres:
            event.remove(engine, "before_cursor_execute", hold_before_lock)


def _charged(app: Flask, allocation_id: int) -> tuple[int, int, int]:
    """The allocation's counter, the sum of its records, and how many there are."""
    with live_session(app) as s:
        counter = s.get_one(Allocation, allocation_id).used_gpu_seconds
        total, n = s.execute(
            select(
                func.coalesce(func.sum(UsageRecord.gpus * UsageRecord.elapsed_seconds), 0),
                func.count(),
            ).where(UsageRecord.allocation_id == allocation_id)
        ).one()
    return counter, int(total), int(n)


def test_two_imports_of_the_same_file_at_once_charge_it_once(race_app: Flask) -> None:
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        with live_session(race_app) as s:
            a = make_allocation(s, hours=1000)
            a_id = a.id
            lines = sacct(*(row(str(i), a, gpus=2, elapsed=600) for i in range(40)))

        results = _racing_imports(race_app, lines)

        problems = []
        expected = 40 * 2 * 600
        if (got := _charged(race_app, a_id)) != (expected, expected, 40):
            problems.append(
                f"counter, records' sum, records = {got}, not {expected}, {expected}, 40"
            )
        outcomes = sorted((r.new, r.unchanged, r.gpu_seconds) for r in results)
        if outcomes != [(0, 40, 0), (40, 0, expected)]:
            problems.append(f"imports reported (new, unchanged, charged) {outcomes}")
        if problems:
            broken[attempt] = problems
    assert not broken, report(broken)


def test_two_imports_of_a_re_reported_longer_job_at_once_charge_the_difference_once(
    race_app: Flask,
) -> None:
    broken: dict[int, list[str]] = {}
    for attempt in range(1, TRIES + 1):
        with live_session(race_app) as s:
            a = make_allocation(s, hours=10)
            a_id, pi = a.id, a.proposal.pi
            assert pi is not None
            record_usage(
                s, jobs_of(sacct(*(row(str(i), a, elapsed=60, state="RUNNING") for i in range(5))))
            )
            longer = sacct(*(row(str(i), a, elapsed=1800) for i in range(5)))  # 10 of 10 hours

        results = _racing_imports(race_app, longer)

        problems = []
        expected = 5 * 4 * 1800
        if (got := _charged(race_app, a_id)) != (expected, expected, 5):
            problems.append(
                f"counter, records' sum, records = {got}, not {expected}, {expected}, 5"
            )
        outcomes = sorted((r.updated, r.unchanged, r.gpu_seconds) for r in results)
        if outcomes != [(0, 5, 0), (5, 0, 5 * 4 * (1800 - 60))]:
            problems.append(f"imports reported (updated, unchanged, charged) {outcomes}")
        with live_session(race_app) as s:
            state = s.get_one(Allocation, a_id).state
            stopped = s.scalars(
                select(OutboxMessage.id).where(
                    OutboxMessage.template == "allocations/stopped",
                    OutboxMessage.recipient_id == pi.id,
                )
            ).all()
        if state != AllocationState.EXHAUSTED or len(stopped) != 1:
            problems.append(f"the allocation is {state.value} with {len(stopped)} used-up mails")
        if problems:
            broken[attempt] = problems
    assert not broken, report(broken)
