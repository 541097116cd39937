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
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import insert, select, update

from portal.allocations import services
from portal.allocations.models import SECONDS_PER_HOUR, Allocation, AllocationState, UsageRecord
from portal.core import audit
from portal.core.models import AnySession, utcnow

#: Jobs written per batch: one read of their existing records, one multi-row insert, one bulk
#: update and one charge per allocation and batch.
BATCH = 2000
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
        for when in (self.started_at, self.ended_at):
            if when is not None and when.tzinfo is None:
                raise ValueError("times must be timezone-aware")
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
    if value.strip().lower() in NO_TIME:
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip())
    except ValueError:
        raise _LineError(f"{name} is not a time: {value!r}") from None
    return when.replace(tzinfo=dt.UTC) if when.tzinfo is None else when.astimezone(dt.UTC)


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
    if report is not None and source:
        report.sources.append(source)
    columns: dict[str, int] | None = None
    width = 0
    for number, raw in enumerate(lines, start=1):
        if report is not None:
            report.lines += 1
        line = raw.rstrip("\r\n")
        if not line.strip():
            continue
        fields = line.split("|")
        if fields[-1] == "" and len(fields) == width + 1:
            fields.pop()  # ``--parsable`` (not ``--parsable2``) ends every line with a '|'
        if columns is None:
            fields[0] = fields[0].lstrip("\ufeff")  # a byte-order mark some editors save
            if fields[-1] == "":
                fields.pop()
            found = _columns(fields)
            if isinstance(found, str):
                bad = Malformed(number, found, line[:200], source)
                if report is not None:
                    report.malformed.append(bad)
                yield bad
                return
            columns, width = found, len(fields)
            continue
        try:
            if len(fields) != width:
                raise _LineError(f"{len(fields)} fields where the header has {width}")
            job_id = fields[columns["JobID"]].strip()
            if "." in job_id:
                if report is not None:
                    report.steps += 1
                continue
            elapsed = fields[columns["ElapsedRaw"]].strip()
            if not elapsed.isdigit():
                raise _LineError(f"ElapsedRaw is not a whole number of seconds: {elapsed!r}")
            job = Job(
                cluster=fields[columns["Cluster"]].strip(),
                job_id=job_id,
                account=fields[columns["Account"]].strip(),
                gpus=_gpus(fields[columns["AllocTRES"]]),
                elapsed_seconds=int(elapsed),
                started_at=_time("Start", fields[columns["Start"]]) if "Start" in columns else None,
                ended_at=_time("End", fields[columns["End"]]) if "End" in columns else None,
                state=fields[columns["State"]].strip() if "State" in columns else "",
            )
        except ValueError as e:  # _LineError, or a value Job refuses
            bad = Malformed(number, str(e), line[:200], source)
            if report is not None:
                report.malformed.append(bad)
            yield bad
            continue
        yield job


# --- charging -----------------------------------------------------------------------------------


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _allocations(
    session: AnySession, pairs: set[tuple[str, str]]
) -> dict[tuple[str, str], Allocation]:
    """The allocations of these (cluster, account) pairs, locked for this transaction.

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
    found: dict[tuple[str, str], Allocation] = {}
    for chunk in _chunks(sorted(ids), IN_CHUNK):
        for allocation in session.scalars(
            select(Allocation)
            .where(Allocation.id.in_(chunk))
            .order_by(Allocation.id)
            .with_for_update()
            .execution_options(populate_existing=True)
        ):
            found[(allocation.cluster, allocation.account)] = allocation
    return found


#: The columns of a usage record that a report sets (besides its key, cluster and job id).
_FIGURES = (
    UsageRecord.allocation_id,
    UsageRecord.account,
    UsageRecord.gpus,
    UsageRecord.elapsed_seconds,
    UsageRecord.started_at,
    UsageRecord.ended_at,
    UsageRecord.job_state,
)
_FIGURE_KEYS = tuple(column.key for column in _FIGURES)


def _figures(job: Job, allocation_id: int) -> tuple[Any, ...]:
    """What a report of ``job`` sets, in ``_FIGURES``' order (compared with a record's)."""
    return (
        allocation_id,
        job.account,
        job.gpus,
        job.elapsed_seconds,
        job.started_at,
        job.ended_at,
        job.state,
    )


def _as_values(figures: tuple[Any, ...]) -> dict[str, Any]:
    return dict(zip(_FIGURE_KEYS, figures, strict=True))


def _record_batch(
    session: AnySession, allocation: Allocation, batch: Sequence[Job], report: ImportReport
) -> dict[int, int]:
    """Write one batch of an allocation's jobs: new ones inserted, changed ones updated. The
    GPU-seconds to charge, per allocation id (a job moved from another account gives back there)."""
    # job id → (record id, its figures in _FIGURES' order)
    existing: dict[str, tuple[int, tuple[Any, ...]]] = {
        job_id: (record_id, tuple(figures))
        for job_id, record_id, *figures in session.execute(
            select(UsageRecord.job_id, UsageRecord.id, *_FIGURES).where(
                UsageRecord.cluster == allocation.cluster,
                UsageRecord.job_id.in_([job.job_id for job in batch]),
            )
        )
    }
    now = utcnow()
    new: list[dict[str, Any]] = []
    changed: list[dict[str, Any]] = []
    delta: dict[int, int] = defaultdict(int)
    for job in batch:
        figures = _figures(job, allocation.id)
        old = existing.get(job.job_id)
        if old is None:
            new.append(
                {"cluster": job.cluster, "job_id": job.job_id, "imported_at": now}
                | _as_values(figures)
            )
            delta[allocation.id] += job.gpu_seconds
        elif old[1] == figures:
            report.unchanged += 1
        else:
            record_id, (old_allocation_id, _, old_gpus, old_elapsed, *_) = old
            changed.append({"id": record_id, "imported_at": now} | _as_values(figures))
            delta[old_allocation_id] -= old_gpus * old_elapsed
            delta[allocation.id] += job.gpu_seconds
    if new:
        session.execute(insert(UsageRecord), new)
        report.new += len(new)
    if changed:
        session.execute(update(UsageRecord), changed)
        report.updated += len(changed)
    return delta


def _charge(
    session: AnySession, allocation: Allocation, gpu_seconds: int, report: ImportReport
) -> None:
    was = allocation.state
    services.charge(session, allocation, gpu_seconds)
    report.gpu_seconds += gpu_seconds
    if was != AllocationState.EXHAUSTED and allocation.state == AllocationState.EXHAUSTED:
        report.exhausted.append((allocation.cluster, allocation.account))


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
    ``report`` continues a report the reader has started. Flushes; the caller commits."""
    report = report if report is not None else ImportReport()
    latest: dict[tuple[str, str], Job] = {}
    given = 0
    for job in jobs:
        given += 1
        key = (job.cluster, job.job_id)
        if key in latest:
            report.repeated += 1
            del latest[key]  # keep the input's order: the last report goes last
        latest[key] = job
    report.jobs += given
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
    if progress is not None:
        progress(given - sum(len(j) for p, j in by_pair.items() if p in found))

    for allocation in sorted(found.values(), key=lambda a: a.id):
        pair = (allocation.cluster, allocation.account)
        pair_jobs = by_pair[pair]
        if allocation.state != AllocationState.ACTIVE:
            report.not_active[pair] = (allocation.state.value, len(pair_jobs))
        for batch in _chunks(pair_jobs, BATCH):
            delta = _record_batch(session, allocation, batch, report)
            for allocation_id, gpu_seconds in sorted(delta.items()):
                if gpu_seconds:
                    target = (
                        allocation
                        if allocation_id == allocation.id
                        else session.get_one(Allocation, allocation_id)
                    )
                    _charge(session, target, gpu_seconds, report)
            if progress is not None:
                progress(len(batch))
    audit.record(session, "usage.import", actor=actor, **report.counts())
    return report
