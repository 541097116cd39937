"""``flask --app portal outputs sweep``: create the final report of every active project that has
none, and remind teams of reports due in 30 and 7 days and overdue (cron-friendly, idempotent)."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from portal.core import audit
from portal.core.database import write_intent
from portal.extensions import db
from portal.outputs import services

outputs_cli = AppGroup("outputs", help="Open outputs: final reports and their reminders.")


@outputs_cli.command("sweep")
def sweep_command() -> None:
    """Create missing final reports of active projects; remind their teams 30 and 7 days before
    the report is due and once it is overdue (each once per report). Run it from cron."""
    with audit.origin(audit.Origin(channel="cli")), write_intent():
        counts = services.sweep(db.session)
        db.session.commit()
    click.echo(", ".join(f"{key}: {n}" for key, n in counts.items()))


def init_app(app: Flask) -> None:
    app.cli.add_command(outputs_cli)
