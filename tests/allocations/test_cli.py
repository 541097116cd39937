"""The allocations commands: ``flask --app portal usage import FILE…`` (Slurm ``sacct`` output,
charged idempotently, ending with a summary; exit code 1 when a line was malformed) and the
scheduled ``allocations sweep``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import Result
from flask import Flask
from sqlalchemy import select
from sqlalchemy.orm import Session

from portal.allocations.models import Allocation, AllocationState
from portal.core.audit import AuditEvent
from tests.allocations.test_usage import row, sacct
from tests.factories import make_allocation


@pytest.fixture(autouse=True)
def _app_context(app: Flask, db: Session) -> Iterator[None]:
    with app.app_context():
        yield


def run(app: Flask, *args: str, stdin: str | None = None) -> Result:
    return app.test_cli_runner().invoke(args=list(args), input=stdin)


def write(folder: Path, name: str, lines: list[str]) -> str:
    path = folder / name
    path.write_text("".join(lines), encoding="utf-8")
    return str(path)


def used(db: Session, allocation: Allocation) -> int:
    db.refresh(allocation)
    return allocation.used_gpu_seconds


def test_import_charges_the_jobs_and_ends_with_a_summary(
    app: Flask, db: Session, tmp_path: Path
) -> None:
    a = make_allocation(db, hours=1000)
    path = write(
        tmp_path,
        "usage.txt",
        sacct(row("1", a, gpus=4), row("1.batch", a, gpus=4), row("2", a, gpus=2, elapsed=1800)),
    )

    result = run(app, "usage", "import", path)

    assert result.exit_code == 0, result.output
    assert result.output.splitlines() == [
        f"Read 4 lines from {path}: 2 jobs, 1 job step skipped, 0 malformed lines.",
        "Charged 5.0 GPU-hours: 2 jobs new, 0 updated, 0 unchanged.",
        "Not charged: 0 jobs without GPUs, 0 jobs of 0 unknown accounts, "
        "0 earlier reports of a job reported again.",
    ]
    assert used(db, a) == 5 * 3600
    (ev,) = db.scalars(select(AuditEvent).where(AuditEvent.action == "usage.import"))
    assert (ev.channel, ev.details["sources"], ev.details["new"]) == ("cli", [path], 2)


def test_importing_the_same_file_twice_charges_once(
    app: Flask, db: Session, tmp_path: Path
) -> None:
    a = make_allocation(db)
    path = write(tmp_path, "usage.txt", sacct(row("1", a), row("2", a)))

    run(app, "usage", "import", path)
    again = run(app, "usage", "import", path)

    assert again.exit_code == 0, again.output
    assert "Charged 0.0 GPU-hours: 0 jobs new, 0 updated, 2 unchanged." in again.output
    assert used(db, a) == 8 * 3600


def test_several_files_and_standard_input_are_one_import(
    app: Flask, db: Session, tmp_path: Path
) -> None:
    a = make_allocation(db)
    first = write(tmp_path, "monday.txt", sacct(row("1", a, elapsed=600, state="RUNNING")))
    second = write(tmp_path, "tuesday.txt", sacct(row("1", a), row("2", a)))

    result = run(app, "usage", "import", first, second, "-", stdin="".join(sacct(row("3", a))))

    assert result.exit_code == 0, result.output
    assert f"from {first}, {second}, <stdin>: 4 jobs" in result.output
    assert "3 jobs new" in result.output  # job 1: the later report counts
    assert "1 earlier report of a job reported again" in result.output
    assert used(db, a) == 3 * 4 * 3600


def test_malformed_lines_are_listed_with_their_line_numbers_and_exit_with_1(
    app: Flask, db: Session, tmp_path: Path
) -> None:
    a = make_allocation(db)
    path = write(
        tmp_path,
        "usage.txt",
        sacct(row("1", a), "2|broken", row("3", a).replace("|3600|", "|soon|"), row("4", a)),
    )

    result = run(app, "usage", "import", path)

    assert result.exit_code == 1
    lines = result.output.splitlines()
    assert lines[0] == f"Read 5 lines from {path}: 2 jobs, 0 job steps skipped, 2 malformed lines."
    assert lines[lines.index("Malformed lines (skipped):") + 1 :] == [
        f"  {path}:3: 2 fields where the header has 8",
        f"  {path}:4: ElapsedRaw is not a whole number of seconds: 'soon'",
    ]
    assert used(db, a) == 2 * 4 * 3600  # the good lines were imported


def test_unknown_accounts_and_allocations_not_active_are_listed(
    app: Flask, db: Session, tmp_path: Path
) -> None:
    pending = make_allocation(db, usable=False)
    path = write(
        tmp_path,
        "usage.txt",
        sacct(
            row("1", pending),
            row("2", ("hal", "atom-0-h100")),
            row("3", ("hal", "atom-0-h100")),
            row("4", ("hal", "cpu-only"), gpus=0),
        ),
    )

    result = run(app, "usage", "import", path)

    assert result.exit_code == 0, result.output
    assert "Not charged: 1 job without GPUs, 2 jobs of 1 unknown account," in result.output
    assert (
        "Unknown accounts (cluster, account: jobs not charged):\n  hal, atom-0-h100: 2 jobs\n"
        in (result.output)
    )
    assert (
        "Charged to allocations that are not active (the jobs ran):\n"
        f"  {pending.cluster}, {pending.account}: pending, 1 job\n"
    ) in result.output


def test_an_import_that_uses_an_allocation_up_says_so(
    app: Flask, db: Session, tmp_path: Path
) -> None:
    a = make_allocation(db, hours=2)
    path = write(tmp_path, "usage.txt", sacct(row("1", a, gpus=2, elapsed=3600)))

    result = run(app, "usage", "import", path)

    assert result.exit_code == 0, result.output
    assert f"Used up by this import (their teams are told):\n  {a.cluster}, {a.account}\n" in (
        result.output
    )
    db.refresh(a)
    assert a.state == AllocationState.EXHAUSTED


def test_no_progress_bar_off_a_terminal(app: Flask, db: Session, tmp_path: Path) -> None:
    a = make_allocation(db)
    path = write(tmp_path, "usage.txt", sacct(*(row(str(i), a) for i in range(50))))
    result = run(app, "usage", "import", path)
    assert result.exit_code == 0, result.output
    assert result.output.startswith("Read 51 lines")
    assert "━" not in result.output and "\x1b[" not in result.output


def test_a_missing_file_is_refused_before_anything_is_imported(
    app: Flask, db: Session, tmp_path: Path
) -> None:
    result = run(app, "usage", "import", str(tmp_path / "nowhere.txt"))
    assert result.exit_code == 2
    assert "does not exist" in result.output
    assert db.scalars(select(AuditEvent).where(AuditEvent.action == "usage.import")).all() == []


def test_the_sweep_is_still_there(app: Flask, db: Session) -> None:
    result = run(app, "allocations", "sweep")
    assert result.exit_code == 0, result.output
    assert result.output.startswith("expired: ")
