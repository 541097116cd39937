"""Usage import throughput on SQLite (``make bench``; printed, not asserted as a time).

A 200,000-line ``sacct --parsable2`` file over 200 allocations (jobs with their ``.batch`` and
``.0`` steps, some CPU-only jobs, some of unknown accounts) is imported through the command three
times: new, the same again (all unchanged), and with a tenth of the jobs re-reported longer. The
test suite proves the import charges once; this measures how fast (DESIGN.md: tens of thousands
of records per second).
"""

from __future__ import annotations

import random
import time
from pathlib import Path

from flask import Flask
from sqlalchemy import func, select

from portal import create_app
from portal.allocations.models import Allocation, UsageRecord
from portal.extensions import db
from tests.factories import make_allocation
from tests.support.app import TEST_CONFIG

LINES = 200_000
ALLOCATIONS = 200
HEADER = "JobID|Account|Cluster|AllocTRES|ElapsedRaw|Start|End|State"


def _sacct(path: Path, accounts: list[tuple[str, str]], *, longer: bool = False) -> int:
    """Write LINES lines (the header included) and return how many GPU jobs they hold."""
    rnd = random.Random(12)  # the same test data every run
    lines, job, gpu_jobs = [HEADER], 0, 0
    while len(lines) < LINES:
        job += 1
        roll = rnd.random()
        cluster, account = (
            ("unknown", f"lab-{job % 7}") if roll < 0.02 else accounts[job % len(accounts)]
        )
        gpus = 0 if roll > 0.95 else rnd.choice((1, 2, 4, 8))
        elapsed = rnd.randint(60, 86_400) * (2 if longer and job % 10 == 0 else 1)
        tres = f"billing={gpus * 4},cpu={gpus * 4},gres/gpu={gpus},mem=64G,node=1"
        times = "2026-11-01T10:00:00|2026-11-02T10:00:00|COMPLETED"
        lines.append(f"{job}|{account}|{cluster}|{tres}|{elapsed}|{times}")
        lines.append(f"{job}.batch|{account}|{cluster}|{tres}|{elapsed}|{times}")
        lines.append(f"{job}.0|{account}|{cluster}|{tres}|{elapsed}|{times}")
        gpu_jobs += gpus > 0 and cluster != "unknown"
    path.write_text("\n".join(lines[:LINES]) + "\n", encoding="utf-8")
    return gpu_jobs


def _import(app: Flask, path: Path, what: str) -> str:
    started = time.perf_counter()
    result = app.test_cli_runner().invoke(args=["usage", "import", str(path)])
    seconds = time.perf_counter() - started
    assert result.exit_code == 0, result.output
    print(f"\n{what}: {LINES:,} lines in {seconds:.2f} s ({LINES / seconds:,.0f} lines/s)")
    print("  " + "\n  ".join(result.output.splitlines()[:3]))
    return result.output


def test_usage_import_rate(tmp_path: Path) -> None:
    app = create_app({**TEST_CONFIG, "DATABASE_URL": f"sqlite:///{tmp_path / 'usage.sqlite3'}"})
    with app.app_context():
        db.create_all()
        t = time.perf_counter()
        made = [make_allocation(db.session, hours=1_000_000) for _ in range(ALLOCATIONS)]
        accounts = [(a.cluster, a.account) for a in made]
        db.session.commit()
        print(f"\n{ALLOCATIONS} allocations made in {time.perf_counter() - t:.1f} s")

        first, longer = tmp_path / "first.txt", tmp_path / "longer.txt"
        jobs = _sacct(first, accounts)
        _sacct(longer, accounts, longer=True)

        out = _import(app, first, "new")
        assert f"{jobs:,} jobs new" in out
        out = _import(app, first, "again")
        assert f"0 jobs new, 0 updated, {jobs:,} unchanged" in out
        out = _import(app, longer, "a tenth longer")
        assert "0 jobs new" in out

        db.session.remove()
        records = db.session.scalar(select(func.count()).select_from(UsageRecord))
        charged = db.session.scalar(select(func.sum(Allocation.used_gpu_seconds)))
        recorded = db.session.scalar(
            select(func.sum(UsageRecord.gpus * UsageRecord.elapsed_seconds))
        )
        assert records == jobs
        assert charged == recorded
        db.engine.dispose()
