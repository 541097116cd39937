"""Usage import throughput on a copy of the scale database (``make bench``; printed and written,
never asserted as a rate).

A ``sacct --parsable2`` file of BENCH_IMPORT_LINES lines over up to 200 active allocations of the
scale data (jobs with their ``.batch`` and ``.0`` steps, some CPU-only jobs, some of unknown
accounts) goes through ``flask --app portal usage import`` (Flask's CLI runner, in this process,
so that start-up is not counted) three times: new, the same again (all
unchanged) and with a tenth of the jobs re-reported longer. Then as many jobs again are pushed to
the operator API (``POST /api/v1/usage``, batches of its largest size) under gunicorn, twice. The
test suite proves the import charges once; this measures how fast (DESIGN.md: tens of thousands
of records per second) and checks, on this data, that a second import charges nothing.
"""

from __future__ import annotations

import json
import random
import re
import secrets
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from flask import Flask
from sqlalchemy import func, select

from portal.allocations.models import Allocation, AllocationState, UsageRecord
from portal.api.api import MAX_JOBS
from portal.extensions import db
from tests.benchmarks.database import ScaleDatabase, working_copy
from tests.benchmarks.report import ImportResult, Results
from tests.benchmarks.server import PORTAL_APP, gunicorn, portal_app, portal_config
from tests.benchmarks.settings import Settings
from tests.benchmarks.timing import fetch
from tests.benchmarks.visitors import add_admin, all_resources, api_token

ALLOCATIONS = 200
HEADER = "JobID|Account|Cluster|AllocTRES|ElapsedRaw|Start|End|State"
START, END = "2026-11-01T10:00:00", "2026-11-02T10:00:00"


@dataclass(frozen=True)
class Job:
    number: int
    cluster: str
    account: str
    gpus: int
    elapsed: int

    @property
    def charged(self) -> bool:
        """Whether an import charges it (it used GPUs on an allocation's account)."""
        return self.gpus > 0 and self.cluster != "unknown"


def jobs(accounts: list[tuple[str, str]], first: int, count: int, *, seed: int) -> list[Job]:
    """``count`` jobs numbered from ``first`` over ``accounts``: 2 % of unknown accounts, 5 %
    without GPUs."""
    rnd = random.Random(seed)  # the same jobs every run
    made = []
    for n in range(first, first + count):
        roll = rnd.random()
        cluster, account = (
            ("unknown", f"lab-{n % 7}") if roll < 0.02 else accounts[n % len(accounts)]
        )
        gpus = 0 if roll > 0.95 else rnd.choice((1, 2, 4, 8))
        made.append(Job(n, cluster, account, gpus, rnd.randint(60, 86_400)))
    return made


def sacct_file(path: Path, found: list[Job], *, longer: bool = False) -> None:
    """Each job as ``sacct`` prints it (its line, then its ``.batch`` and ``.0`` steps); with
    ``longer``, every tenth job ran twice as long."""
    with path.open("w", encoding="utf-8") as out:
        out.write(HEADER + "\n")
        for j in found:
            elapsed = j.elapsed * (2 if longer and j.number % 10 == 0 else 1)
            tres = f"billing={j.gpus * 4},cpu={j.gpus * 4},gres/gpu={j.gpus},mem=64G,node=1"
            rest = f"{j.account}|{j.cluster}|{tres}|{elapsed}|{START}|{END}|COMPLETED\n"
            out.write(f"{j.number}|{rest}{j.number}.batch|{rest}{j.number}.0|{rest}")


def as_json(j: Job) -> dict[str, Any]:
    return {
        "cluster": j.cluster,
        "job_id": str(j.number),
        "account": j.account,
        "gpus": j.gpus,
        "elapsed_seconds": j.elapsed,
        "started_at": START + "Z",
        "ended_at": END + "Z",
        "state": "COMPLETED",
    }


@dataclass(frozen=True)
class Totals:
    records: int
    recorded: int  # GPU-seconds the usage records hold
    charged: int  # GPU-seconds the allocations were charged

    def minus(self, other: Totals) -> Totals:
        return Totals(
            self.records - other.records,
            self.recorded - other.recorded,
            self.charged - other.charged,
        )


def totals(app: Flask) -> Totals:
    with app.app_context():
        session = db.session
        found = Totals(
            session.scalar(select(func.count()).select_from(UsageRecord)) or 0,
            session.scalar(select(func.sum(UsageRecord.gpus * UsageRecord.elapsed_seconds))) or 0,
            session.scalar(select(func.sum(Allocation.used_gpu_seconds))) or 0,
        )
        db.session.remove()
    return found


def _setup(app: Flask) -> tuple[list[tuple[str, str]], int, dict[str, str]]:
    """The accounts to charge (active allocations'), the first free job number (longer than
    any job id recorded, so that no job of the bench is one of the data's), and a resource
    operator's API token for every resource."""
    with app.app_context():
        session = db.session
        accounts = [
            (row.cluster, row.account)
            for row in session.execute(
                select(Allocation.cluster, Allocation.account)
                .where(Allocation.state == AllocationState.ACTIVE)
                .order_by(Allocation.id)
                .limit(ALLOCATIONS)
            )
        ]
        longest = session.scalar(select(func.max(func.length(UsageRecord.job_id)))) or 0
        headers: dict[str, str] = {}
        if accounts:
            headers = api_token(session, add_admin(session), resources=all_resources(session))
        session.commit()
        db.session.remove()
    return accounts, 10**longest, headers


def _run_command(app: Flask, path: Path) -> tuple[float, str]:
    """``flask --app portal usage import PATH``, run by Flask's CLI runner in this process (on
    the app configured as the server is): timed without Python's and the portal's start-up."""
    runner = app.test_cli_runner()
    started = time.perf_counter()
    done = runner.invoke(args=["usage", "import", str(path)])
    seconds = time.perf_counter() - started
    assert done.exit_code == 0, done.output
    return seconds, done.output


def _charged_line(output: str) -> str:
    """The command's "N jobs new, U updated, C unchanged" (from its "Charged …" line)."""
    found = re.search(r"Charged [^:]*: (.*)\.", output)
    return found.group(1) if found else output.strip()


def test_usage_import_rate(
    settings: Settings, scale_database: ScaleDatabase, results: Results, tmp_path: Path
) -> None:
    secret = secrets.token_urlsafe(48)
    with working_copy(scale_database, tmp_path) as url:
        env = portal_config(url, secret)
        app = portal_app(url, secret)
        accounts, first, headers = _setup(app)
        if not accounts:
            pytest.skip("the scale data has no active allocation to charge")
        count = settings.import_lines // 3  # a job and its two steps per job
        made = jobs(accounts, first, count, seed=12)
        charged = sum(j.charged for j in made)
        gpu_seconds = sum(j.gpus * j.elapsed for j in made if j.charged)
        lines = 1 + 3 * count
        new, longer = tmp_path / "sacct.txt", tmp_path / "sacct-longer.txt"
        sacct_file(new, made)
        sacct_file(longer, made, longer=True)

        runs = (
            ("new", new, Totals(charged, gpu_seconds, gpu_seconds), f"{charged:,} jobs new"),
            ("again", new, Totals(0, 0, 0), f"0 jobs new, 0 updated, {charged:,} unchanged"),
            ("a tenth longer", longer, None, "0 jobs new"),
        )
        for run, path, expected, says in runs:
            before = totals(app)
            seconds, output = _run_command(app, path)
            change = totals(app).minus(before)
            assert says in output, output
            assert change.recorded == change.charged, "charged other than the records say"
            if expected is not None:
                assert change == expected, f"{run}: {change} where {expected} was due"
            results.imports.append(
                ImportResult(
                    how="file",
                    run=run,
                    jobs=count,
                    seconds=seconds,
                    jobs_per_s=count / seconds,
                    lines=lines,
                    lines_per_s=lines / seconds,
                    summary=_charged_line(output),
                )
            )

        pushed = jobs(accounts, first + count, count, seed=13)
        charged = sum(j.charged for j in pushed)
        gpu_seconds = sum(j.gpus * j.elapsed for j in pushed if j.charged)
        bodies = [
            json.dumps([as_json(j) for j in pushed[i : i + MAX_JOBS]]).encode()
            for i in range(0, len(pushed), MAX_JOBS)
        ]
        post = {**headers, "Content-Type": "application/json"}
        with gunicorn(PORTAL_APP, 1, env, tmp_path) as server:
            for run, expected in (
                ("new", Totals(charged, gpu_seconds, gpu_seconds)),
                ("again", Totals(0, 0, 0)),
            ):
                before = totals(app)
                answers: list[dict[str, Any]] = []
                started = time.perf_counter()
                for body in bodies:
                    answer = fetch(server.port, "/api/v1/usage", post, method="POST", body=body)
                    assert answer.status == 200, answer.body[:500]
                    answers.append(json.loads(answer.body))
                seconds = time.perf_counter() - started
                change = totals(app).minus(before)
                assert change == expected, f"API {run}: {change} where {expected} was due"
                new_jobs = sum(a["new"] for a in answers)
                unchanged = sum(a["unchanged"] for a in answers)
                assert sum(a["updated"] for a in answers) == 0
                assert (new_jobs, unchanged) == ((charged, 0) if run == "new" else (0, charged))
                results.imports.append(
                    ImportResult(
                        how="api",
                        run=run,
                        jobs=count,
                        seconds=seconds,
                        jobs_per_s=count / seconds,
                        requests=len(bodies),
                        summary=f"{new_jobs:,} jobs new, 0 updated, {unchanged:,} unchanged",
                    )
                )
        with app.app_context():
            db.engine.dispose()
    for i in results.imports:
        print(f"{i.how} {i.run}: {i.jobs:,} jobs in {i.seconds:.2f} s ({i.jobs_per_s:,.0f}/s)")
