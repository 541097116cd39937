"""``flask --app portal allocations sweep`` (cron-friendly, idempotent) and ``flask --app portal
usage import FILE…`` (Slurm ``sacct --parsable2`` output)."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from portal.allocations import services, usage
from portal.core import audit
from portal.core.database import write_intent
from portal.extensions import db

allocations_cli = AppGroup("allocations", help="GPU allocations: the scheduled sweep.")
usage_cli = AppGroup("usage", help="Usage from the clusters' schedulers.")


@allocations_cli.command("sweep")
def sweep_command() -> None:
    """Expire allocations past their end date and send the used/ending notices (each once); run
    it from cron as often as you like."""
    with audit.origin(audit.Origin(channel="cli")), write_intent():
        counts = services.sweep(db.session)
        db.session.commit()
    click.echo(", ".join(f"{key}: {n}" for key, n in counts.items()))


#: Malformed lines and accounts listed one by one in the summary; the rest are counted.
LISTED = 50


def _plural(n: int, word: str, words: str | None = None) -> str:
    return f"{n:,} {word if n == 1 else (words or word + 's')}"


def _summary(report: usage.ImportReport) -> list[str]:
    files = (
        ", ".join(report.sources)
        if len(report.sources) <= 3
        else _plural(len(report.sources), "file")
    )
    lines = [
        f"Read {_plural(report.lines, 'line')} from {files}: {_plural(report.jobs, 'job')}, "
        f"{_plural(report.steps, 'job step')} skipped, {_plural(len(report.malformed), 'malformed line')}.",
        f"Charged {report.gpu_hours:,.1f} GPU-hours: {_plural(report.new, 'job')} new, "
        f"{report.updated:,} updated, {report.unchanged:,} unchanged.",
        f"Not charged: {_plural(report.no_gpus, 'job')} without GPUs, "
        f"{_plural(report.unknown_jobs, 'job')} of {_plural(len(report.unknown), 'unknown account')}, "
        f"{_plural(report.repeated, 'earlier report')} of a job reported again.",
    ]
    if report.malformed:
        lines.append("Malformed lines (skipped):")
        lines += [f"  {bad}" for bad in report.malformed[:LISTED]]
        if len(report.malformed) > LISTED:
            lines.append(f"  … and {len(report.malformed) - LISTED:,} more")
    if report.unknown:
        lines.append("Unknown accounts (cluster, account: jobs not charged):")
        unknown = sorted(report.unknown.items(), key=lambda item: (-item[1], item[0]))
        lines += [f"  {c}, {a}: {_plural(n, 'job')}" for (c, a), n in unknown[:LISTED]]
        if len(unknown) > LISTED:
            lines.append(f"  … and {len(unknown) - LISTED:,} more")
    if report.not_active:
        lines.append("Charged to allocations that are not active (the jobs ran):")
        lines += [
            f"  {c}, {a}: {state}, {_plural(n, 'job')}"
            for (c, a), (state, n) in sorted(report.not_active.items())
        ]
    if report.exhausted:
        lines.append("Used up by this import (their teams are told):")
        lines += [f"  {c}, {a}" for c, a in report.exhausted]
    return lines


@usage_cli.command("import")
@click.argument(
    "files",
    nargs=-1,
    required=True,
    type=click.Path(exists=True, dir_okay=False, allow_dash=True),
)
def import_command(files: tuple[str, ...]) -> None:
    """Charge the GPU-hours of the Slurm jobs in FILE… (``-``: standard input) to the allocations
    their (cluster, account) maps to. Each FILE is ``sacct --parsable2`` output with a header
    line, times in UTC:

    \b
      TZ=UTC sacct --allusers --clusters=NAME --parsable2 --starttime=… \\
        --format=JobID,Account,Cluster,AllocTRES,ElapsedRaw,Start,End,State

    Idempotent: a job already imported is updated (only the difference is charged), never counted
    twice, so overlapping exports may be imported as often as you like. Malformed lines are listed
    and skipped; the rest is imported. Exits with 1 when a line was malformed, else 0.
    """
    report = usage.ImportReport()
    jobs: list[usage.Job] = []
    for name in files:
        with (
            click.open_file(name, encoding="utf-8", errors="replace") as f,
            usage.collector_paused(),
        ):
            source = "<stdin>" if name == "-" else name
            jobs += (
                j
                for j in usage.parse_sacct(f, source=source, report=report)
                if isinstance(j, usage.Job)
            )
    # Imported here, not with the module: the web workers that load this module never draw bars.
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    bar = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeRemainingColumn(),
        console=console,
        transient=True,
        disable=not console.is_terminal,
    )
    with audit.origin(audit.Origin(channel="cli")), write_intent(), bar:
        task = bar.add_task("Charging jobs", total=len(jobs))
        usage.record_usage(db.session, jobs, progress=lambda n: bar.advance(task, n), report=report)
        db.session.commit()
    for line in _summary(report):
        click.echo(line)
    if report.malformed:
        raise SystemExit(1)


def init_app(app: Flask) -> None:
    app.cli.add_command(allocations_cli)
    app.cli.add_command(usage_cli)
