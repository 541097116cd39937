"""Usage from the clusters: scheduler jobs read from Slurm's ``sacct`` output, charged to the
allocations their (cluster, account) maps to as GPU-hours (GPUs times elapsed time).

A job is identified by (cluster, job id): reported again it updates its record and charges only
the difference (a longer run more, a shorter re-report less), so the same file imported twice, or
the same jobs pushed by an operator after an import, charge once. Used by ``flask --app portal
usage import`` now and by the operators' usage push later; both call :func:`record_usage`.

``sacct`` prints times in the cluster's local time zone without saying which: run it with
``TZ=UTC`` (times are read as UTC)::

    TZ=UTC sacct --allusers --clusters=NAME --parsable2 --starttime=… \\
        --format=JobID,Account,Cluster,AllocTRES,ElapsedRaw,Start,End,State
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, cast

from sqlalchemy import (
    Dialect,
    Row,
    Table,
    TypeDecorator,
    bindparam,
    insert,
    select,
    type_coerce,
    update,
)
from sqlalchemy.sql.compiler import SQLCompiler

from portal.allocations import services
from portal.allocations.models import SECONDS_PER_HOUR, Allocation, AllocationState, UsageRecord
from portal.core import audit
from portal.core.models import AnySession, UTCDateTime, utcnow

#: Jobs written per batch: one read of their existing records, one insert, one update and one
#: charge of every allocation the batch's jobs go to (as many as an operator pushes at once).
BATCH = 5000
#: Bound parameters per ``IN (…)`` list (SQLite allows 32,766 in a statement).
IN_CHUNK = 1000

#: The columns ``sacct --parsable2`` must print (any order; the header line names them).
REQUIRED_COLUMNS = ("JobID", "Account", "Cluster", "AllocTRES", "ElapsedRaw")
#: Columns read when present.
OPTIONAL_COLUMNS = ("Start", "End", "State")
#: What ``sacct`` prints for a time it does not know (a job not started, or still running).
NO_TIME = frozenset({"", "unknown", "none"})

#: The longest values a usage record holds (its columns' lengths).
MAX_CLUSTER, MAX_JOB_ID, MAX_ACCOUNT, MAX_STATE = 80, 64, 64, 40


@dataclass(slots=True)
class Job:
    """One scheduler job as a cluster reports it (Slurm's parent job, not its steps)."""

    cluster: str
    job_id: str
    account: str
    gpus: int
    elapsed_seconds: int
    started_at: dt.datetime | None = None
    ended_at: dt.datetime | None = None
    #: Slurm's job state: COMPLETED, RUNNING, FAILED, TIMEOUT, CANCELLED …
    state: str = ""

    def __post_init__(self) -> None:
        # One test for the usual job (hundreds of thousands per import), the reason only if not.
        if not (
            0 < len(self.cluster) <= MAX_CLUSTER
            and 0 < len(self.job_id) <= MAX_JOB_ID
            and 0 < len(self.account) <= MAX_ACCOUNT
        ):
            for name, value, longest in (
                ("cluster", self.cluster, MAX_CLUSTER),
                ("job id", self.job_id, MAX_JOB_ID),
                ("account", self.account, MAX_ACCOUNT),
            ):
                if not value:
                    raise ValueError(f"no {name}")
                if len(value) > longest:
                    raise ValueError(f"the {name} is longer than {longest} characters")
        if self.gpus < 0 or self.elapsed_seconds < 0:
            raise ValueError("GPUs and elapsed seconds cannot be negative")
        if (self.started_at is not None and self.started_at.tzinfo is None) or (
            self.ended_at is not None and self.ended_at.tzinfo is None
        ):
            raise ValueError("times must be timezone-aware")
        if len(self.state) > MAX_STATE:
            self.state = self.state[:MAX_STATE]

    @property
    def gpu_seconds(self) -> int:
        return self.gpus * self.elapsed_seconds


@dataclass(frozen=True, slots=True)
class Malformed:
    """A line that could not be read, with its number in its file (1: the header) and why."""

    line: int
    reason: str
    text: str = ""
    #: The file it came from, as the caller named it.
    source: str = ""

    def __str__(self) -> str:
        where = f"{self.source}:{self.line}" if self.source else f"line {self.line}"
        return f"{where}: {self.reason}"


@dataclass
class ImportReport:
    """What an import did. The reader (:func:`parse_sacct`) fills in the lines, job steps and
    malformed lines; :func:`record_usage` the rest."""

    #: The files read, as the caller named them.
    sources: list[str] = field(default_factory=list)
    #: Lines read, headers and blank lines included.
    lines: int = 0
    #: Job steps (``123.batch``, ``123.0``) skipped: they repeat their job's resources.
    steps: int = 0
    malformed: list[Malformed] = field(default_factory=list)
    #: Jobs given to ``record_usage``.
    jobs: int = 0
    #: Reports of a job that the same import reported again later (the last report counts).
    repeated: int = 0
    #: Jobs that used no GPU (nothing to charge).
    no_gpus: int = 0
    new: int = 0
    updated: int = 0
    unchanged: int = 0
    #: GPU-seconds charged, net (a job re-reported shorter gives some back).
    gpu_seconds: int = 0
    #: (cluster, account) that no allocation has: how many jobs each.
    unknown: dict[tuple[str, str], int] = field(default_factory=dict)
    #: Allocations charged although not active (the jobs ran): (cluster, account) → (state, jobs).
    not_active: dict[tuple[str, str], tuple[str, int]] = field(default_factory=dict)
    #: Allocations this import used up: (cluster, account).
    exhausted: list[tuple[str, str]] = field(default_factory=list)

    @property
    def gpu_hours(self) -> float:
        return self.gpu_seconds / SECONDS_PER_HOUR

    @property
    def unknown_jobs(self) -> int:
        return sum(self.unknown.values())

    def counts(self) -> dict[str, Any]:
        """The figures, as the ``usage.import`` audit event keeps them."""
        return {
            "sources": self.sources[:20],
            "lines": self.lines,
            "steps": self.steps,
            "malformed": len(self.malformed),
            "jobs": self.jobs,
            "repeated": self.repeated,
            "no_gpus": self.no_gpus,
            "new": self.new,
            "updated": self.updated,
            "unchanged": self.unchanged,
            "gpu_seconds": self.gpu_seconds,
            "unknown_accounts": len(self.unknown),
            "unknown_jobs": self.unknown_jobs,
            "not_active_allocations": len(self.not_active),
            "exhausted_allocations": len(self.exhausted),
        }


# --- reading sacct ------------------------------------------------------------------------------


class _LineError(ValueError):
    pass


#: A GPU count in ``AllocTRES``: ``gres/gpu=4``, or typed, ``gres/gpu:h100=4``.
_GPU_TRES = re.compile(r"(?:^|,)\s*gres/gpu(:[^=,]*)?=([^,]*)")


def _gpus(tres: str) -> int:
    """The GPUs in an ``AllocTRES`` value (``billing=8,cpu=8,gres/gpu=4,mem=64G,node=1``):
    ``gres/gpu``, or else the sum of typed ``gres/gpu:h100`` entries; none is 0."""
    plain: int | None = None
    typed = 0
    for match in _GPU_TRES.finditer(tres):
        kind, value = match.groups()
        value = value.strip()
        if not value.isdigit():
            raise _LineError(f"gres/gpu{kind or ''} is not a whole number: {value!r}")
        if kind is None:
            plain = int(value)
        else:
            typed += int(value)
    return plain if plain is not None else typed


def _time(name: str, value: str) -> dt.datetime | None:
    text = value.strip()
    if not text or text.lower() in NO_TIME:
        return None
    try:
        when = dt.datetime.fromisoformat(text)
    except ValueError:
        raise _LineError(f"{name} is not a time: {value!r}") from None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


#: Distinct ``AllocTRES`` values and times a reader remembers (``sacct`` repeats the same few
#: TRES values on every line, and jobs of one array or one minute share their times).
REMEMBERED = 4096


def _remembered(cache: dict[str, Any], key: str, value: Any) -> Any:
    if len(cache) >= REMEMBERED:
        cache.clear()
    cache[key] = value
    return value


def _columns(header: list[str]) -> dict[str, int] | str:
    """Where each known column is, or what is wrong with the header."""
    where = {name.strip().lower(): i for i, name in enumerate(header)}
    missing = [c for c in REQUIRED_COLUMNS if c.lower() not in where]
    if missing:
        return (
            f"the header line has no {', '.join(missing)} column (expected sacct --parsable2 "
            f"with a header and --format={','.join(REQUIRED_COLUMNS + OPTIONAL_COLUMNS)})"
        )
    return {c: where[c.lower()] for c in REQUIRED_COLUMNS + OPTIONAL_COLUMNS if c.lower() in where}


def parse_sacct(
    lines: Iterable[str], *, source: str = "", report: ImportReport | None = None
) -> Iterator[Job | Malformed]:
    """The jobs in ``sacct --parsable2`` output: a header line naming the columns (in any order),
    then one job or job step per line, fields separated by ``|``. Job steps (a job id with a dot:
    ``123.batch``, ``123.0``) are skipped: they repeat their job's resources. A line that cannot
    be read is yielded as :class:`Malformed` with its line number; a header without the columns
    needed is one Malformed line and the end of the file.

    ``report``, when given, counts the lines and job steps read and keeps the malformed lines."""
    if report is None:
        report = ImportReport()  # counted for nobody
    elif source:
        report.sources.append(source)
    columns: dict[str, int] | None = None
    width = 0
    # Where each column is (set by the header line), and what this file's values came to.
    job_at = account_at = cluster_at = tres_at = elapsed_at = 0
    start_at = end_at = state_at = None
    gpus_of: dict[str, int] = {}
    times: dict[str, dt.datetime | None] = {}
    for number, raw in enumerate(lines, start=1):
        report.lines += 1
        line = raw.rstrip("\r\n")
        if not line or line.isspace():
            continue
        fields = line.split("|")
        if columns is None:
            fields[0] = fields[0].lstrip("\ufeff")  # a byte-order mark some editors save
            if fields[-1] == "":
                fields.pop()  # ``--parsable`` (not ``--parsable2``) ends lines with a '|'
            found = _columns(fields)
            if isinstance(found, str):
                bad = Malformed(number, found, line[:200], source)
                report.malformed.append(bad)
                yield bad
                return
            columns, width = found, len(fields)
            job_at, account_at, cluster_at, tres_at, elapsed_at = (
                found[c] for c in REQUIRED_COLUMNS
            )
            start_at, end_at, state_at = (found.get(c) for c in OPTIONAL_COLUMNS)
            continue
        try:
            if len(fields) != width:
                if len(fields) != width + 1 or fields[-1] != "":
                    raise _LineError(f"{len(fields)} fields where the header has {width}")
                fields.pop()
            job_id = fields[job_at]
            if "." in job_id:
                report.steps += 1
                continue
            job_id = job_id.strip()
            elapsed = fields[elapsed_at].strip()
            if not elapsed.isdigit():
                raise _LineError(f"ElapsedRaw is not a whole number of seconds: {elapsed!r}")
            tres = fields[tres_at]
            gpus = gpus_of[tres] if tres in gpus_of else _remembered(gpus_of, tres, _gpus(tres))
            started = ended = None
            if start_at is not None:
                value = fields[start_at]
                started = (
                    times[value]
                    if value in times
                    else _remembered(times, value, _time("Start", value))
                )
            if end_at is not None:
                value = fields[end_at]
                ended = (
                    times[value]
                    if value in times
                    else _remembered(times, value, _time("End", value))
                )
            job = Job(
                fields[cluster_at].strip(),
                job_id,
                fields[account_at].strip(),
                gpus,
                int(elapsed),
                started,
                ended,
                fields[state_at].strip() if state_at is not None else "",
            )
        except ValueError as e:  # _LineError, or a value Job refuses
            bad = Malformed(number, str(e), line[:200], source)
            report.malformed.append(bad)
            yield bad
            continue
        yield job


# --- charging -----------------------------------------------------------------------------------


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cycle collector paused for a bulk step (and on again after, if it was on). An
    import makes hundreds of thousands of objects that live until it ends (the jobs, their
    records), and every few thousand of them start the collector, now and then over the whole
    heap: up to a third of an import's time, to free nothing (they hold no cycles; memory is
    freed by reference counting as ever). The switch is the process's: of two steps at once in
    one process, the one that found it on turns it on again when it ends."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _allocations(
    session: AnySession, pairs: set[tuple[str, str]]
) -> dict[tuple[str, str], Row[int, str, str, AllocationState]]:
    """The allocations of these (cluster, account) pairs (id, cluster, account, state), locked
    for this transaction.

    The lock (``SELECT … FOR UPDATE`` in id order, so two imports never deadlock) makes
    concurrent imports and pushes of the same allocation's jobs take turns: the second reads the
    records the first wrote, so nothing is inserted twice and no update charges twice. SQLite
    ignores FOR UPDATE but runs one writing transaction at a time (``BEGIN IMMEDIATE``)."""
    clusters = sorted({c for c, _ in pairs})
    accounts = sorted({a for _, a in pairs})
    ids: list[int] = []
    for chunk in _chunks(accounts, IN_CHUNK):
        ids += [
            row.id
            for row in session.execute(
                select(Allocation.id, Allocation.cluster, Allocation.account).where(
                    Allocation.cluster.in_(clusters), Allocation.account.in_(chunk)
                )
            )
            if (row.cluster, row.account) in pairs
        ]
    found: dict[tuple[str, str], Row[int, str, str, AllocationState]] = {}
    for chunk in _chunks(sorted(ids), IN_CHUNK):
        for row in session.execute(
            select(Allocation.id, Allocation.cluster, Allocation.account, Allocation.state)
            .where(Allocation.id.in_(chunk))
            .order_by(Allocation.id)
            .with_for_update()
        ):
            found[(row.cluster, row.account)] = row
    return found


def _remembering(process: Callable[[Any], Any] | None) -> Callable[[Any], Any] | None:
    """``process``, remembering what it made of the last ``REMEMBERED`` distinct values."""
    if process is None:
        return None
    done: dict[Any, Any] = {}

    def remembered(value: Any) -> Any:
        if value is None:
            return None
        converted = done.get(value)
        if converted is None:
            if len(done) >= REMEMBERED:
                done.clear()
            converted = done[value] = process(value)
        return converted

    return remembered


class _RecordTime(TypeDecorator[dt.datetime]):
    """A usage record's time as its column keeps it (``UTCDateTime``), each distinct value
    converted to or from the database's form once: an import writes its own time on every
    record it writes, and jobs of one array or one scheduler cycle start and end together."""

    impl = UTCDateTime
    cache_ok = True

    def bind_processor(self, dialect: Dialect) -> Callable[[Any], Any] | None:
        return _remembering(super().bind_processor(dialect))

    def result_processor(self, dialect: Dialect, coltype: object) -> Callable[[Any], Any] | None:
        return _remembering(super().result_processor(dialect, coltype))


_TABLE = cast(Table, UsageRecord.__table__)
_RECORDS = _TABLE.c
_TIMES = ("started_at", "ended_at", "imported_at")
#: The columns of a usage record that a report sets (besides its key, cluster and job id).
_FIGURES = (
    _RECORDS.allocation_id,
    _RECORDS.account,
    _RECORDS.gpus,
    _RECORDS.elapsed_seconds,
    _RECORDS.started_at,
    _RECORDS.ended_at,
    _RECORDS.job_state,
)
_FIGURE_KEYS = tuple(column.key for column in _FIGURES)
#: The statements of a batch, built once: the read of its records, and the insert and update
#: of many records each (``executemany``).
_READ = select(
    _RECORDS.cluster,
    _RECORDS.job_id,
    _RECORDS.id,
    *(type_coerce(c, _RecordTime()) if c.key in _TIMES else c for c in _FIGURES),
)
_INSERT = insert(_TABLE).values({key: bindparam(key, type_=_RecordTime()) for key in _TIMES})
_UPDATE = (
    update(_TABLE)
    .where(_RECORDS.id == bindparam("record_id"))
    .values(
        {
            key: bindparam(key, type_=_RecordTime() if key in _TIMES else None)
            for key in (*_FIGURE_KEYS, "imported_at")
        }
    )
)


#: The columns an insert of new records sets, in the order ``_insert_records`` takes them (the
#: benchmark generator writes its records in the same order).
RECORD_COLUMNS = (
    "allocation_id",
    "cluster",
    "job_id",
    "account",
    "gpus",
    "elapsed_seconds",
    "started_at",
    "ended_at",
    "job_state",
    "imported_at",
)


@functools.cache
def _compiled_insert(
    dialect: Dialect,
) -> tuple[str, list[int] | None, list[tuple[int, Callable[[Any], Any]]]]:
    """``_INSERT`` compiled for ``dialect``: its SQL, where each of the driver's positional
    parameters comes from in a row of ``RECORD_COLUMNS`` (None: the driver takes them by name), and
    which values are converted for the database (their column types' bind processors)."""
    compiled = _INSERT.compile(
        dialect=dialect, column_keys=list(RECORD_COLUMNS), for_executemany=True
    )
    assert isinstance(compiled, SQLCompiler)
    where = {key: i for i, key in enumerate(RECORD_COLUMNS)}
    order = [where[key] for key in compiled.positiontup or ()] if compiled.positional else None
    converted: list[tuple[int, Callable[[Any], Any]]] = []
    for key, i in where.items():
        process = compiled.binds[key].type.dialect_impl(dialect).bind_processor(dialect)
        if process is not None:
            converted.append((i, process))
    return compiled.string, order, converted


def _insert_records(session: AnySession, rows: list[list[Any]]) -> None:
    """Insert new records (each a list of values in ``RECORD_COLUMNS``' order) with one
    ``executemany`` of the compiled ``_INSERT``: the values converted as SQLAlchemy converts them,
    without its parameter dictionary per row (an import inserts tens of thousands)."""
    connection = session.connection()
    sql, order, converted = _compiled_insert(connection.dialect)
    for row in rows:
        for i, process in converted:
            row[i] = process(row[i])
    params: list[Any]
    if order is None:
        params = [dict(zip(RECORD_COLUMNS, row, strict=True)) for row in rows]
    elif order == sorted(order):  # the driver's order is the rows' (SQLite's)
        params = [tuple(row) for row in rows]
    else:
        params = [tuple([row[i] for i in order]) for row in rows]
    connection.exec_driver_sql(sql, params)


def _record_batch(
    session: AnySession, batch: Sequence[tuple[int, Job]], report: ImportReport
) -> dict[int, int]:
    """Write one batch of jobs (with the id of the allocation each is charged to): new ones
    inserted, changed ones updated, in one statement each after one read of their records. The
    GPU-seconds to charge, per allocation id (a job moved from another account gives back
    there)."""
    # (cluster, job id) → its record: (cluster, job id, record id, *figures in _FIGURES' order)
    existing = {
        (row[0], row[1]): row
        for row in session.execute(
            _READ.where(
                _RECORDS.cluster.in_({job.cluster for _, job in batch}),
                _RECORDS.job_id.in_([job.job_id for _, job in batch]),
            )
        ).all()
    }
    now = utcnow()
    new: list[list[Any]] = []
    changed: list[dict[str, Any]] = []
    delta: dict[int, int] = defaultdict(int)
    for allocation_id, job in batch:
        old = existing.get((job.cluster, job.job_id)) if existing else None
        if old is None:
            new.append(
                [
                    allocation_id,
                    job.cluster,
                    job.job_id,
                    job.account,
                    job.gpus,
                    job.elapsed_seconds,
                    job.started_at,
                    job.ended_at,
                    job.state,
                    now,
                ]
            )
            delta[allocation_id] += job.gpus * job.elapsed_seconds
            continue
        figures = (
            allocation_id,
            job.account,
            job.gpus,
            job.elapsed_seconds,
            job.started_at,
            job.ended_at,
            job.state,
        )
        if old[3:] == figures:
            report.unchanged += 1
            continue
        changed.append(
            {"record_id": old[2], "imported_at": now}
            | dict(zip(_FIGURE_KEYS, figures, strict=True))
        )
        delta[old[3]] -= old[5] * old[6]  # the record's allocation, its GPUs times seconds
        delta[allocation_id] += job.gpus * job.elapsed_seconds
    if new:
        _insert_records(session, new)
        report.new += len(new)
    if changed:
        session.execute(_UPDATE, changed)
        report.updated += len(changed)
    return delta


@collector_paused()
def record_usage(
    session: AnySession,
    jobs: Iterable[Job],
    *,
    progress: Callable[[int], object] | None = None,
    actor: Any = None,
    report: ImportReport | None = None,
) -> ImportReport:
    """Record ``jobs`` as usage records and charge their GPU-hours to the allocations their
    (cluster, account) maps to; what the report says they did.

    Idempotent by (cluster, job id): a job already recorded as reported is unchanged; reported
    again with other figures its record is updated and only the difference is charged. Of two
    reports of one job in ``jobs``, the last counts. Jobs without GPUs are skipped; jobs of an
    unknown (cluster, account) are listed with their counts, not charged. Allocations that are
    not active (pending, suspended, expired) are still charged — the jobs ran — and listed; an
    active one whose usage reaches its hours is used up (its team is told). One ``usage.import``
    audit event records the counts. ``progress(n)`` is told each time n more jobs are done;
    ``report`` continues a report the reader has started. Flushes; the caller commits.

    In bulk: jobs are written in batches of ``BATCH`` (in allocation order), each batch one read
    of its records, one insert, one update and one charge of all its allocations."""
    report = report if report is not None else ImportReport()
    session.flush()  # the statements below are Core's: nothing pending is left behind them
    latest: dict[tuple[str, str], Job] = {}
    given = 0
    for job in jobs:
        given += 1
        key = (job.cluster, job.job_id)
        latest.pop(key, None)  # keep the input's order: the last report goes last
        latest[key] = job
    report.jobs += given
    report.repeated += given - len(latest)
    by_pair: dict[tuple[str, str], list[Job]] = defaultdict(list)
    for job in latest.values():
        if job.gpus == 0:
            report.no_gpus += 1
        else:
            by_pair[(job.cluster, job.account)].append(job)
    found = _allocations(session, set(by_pair))
    for pair, pair_jobs in sorted(by_pair.items()):
        if pair not in found:
            report.unknown[pair] = len(pair_jobs)

    charged: list[tuple[int, Job]] = []
    for locked in sorted(found.values(), key=lambda a: a.id):
        pair = (locked.cluster, locked.account)
        pair_jobs = by_pair[pair]
        if locked.state != AllocationState.ACTIVE:
            report.not_active[pair] = (locked.state.value, len(pair_jobs))
        charged += [(locked.id, job) for job in pair_jobs]
    if progress is not None:
        progress(given - len(charged))
    for batch in _chunks(charged, BATCH):
        delta = _record_batch(session, batch, report)
        report.gpu_seconds += sum(delta.values())
        for allocation in services.charge_many(session, delta):
            report.exhausted.append((allocation.cluster, allocation.account))
        if progress is not None:
            progress(len(batch))
    audit.record(session, "usage.import", actor=actor, **report.counts())
    return report
