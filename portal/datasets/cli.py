"""``flask --app portal datasets sweep``: expire access past its end date and send the 30- and
7-day notices (cron-friendly, idempotent)."""

from __future__ import annotations

import click
from flask import Flask
from flask.cli import AppGroup

from portal.core import audit
from portal.core.database import write_intent
from portal.datasets import services
from portal.extensions import db

datasets_cli = AppGroup("datasets", help="Datasets: the scheduled sweep of access.")


@datasets_cli.command("sweep")
def sweep_command() -> None:
    """Expire access past its end date and tell holders 30 and 7 days before the end (each once
    per end date); run it from cron as often as you like."""
    with audit.origin(audit.Origin(channel="cli")), write_intent():
        counts = services.sweep(db.session)
        db.session.commit()
    click.echo(", ".join(f"{key}: {n}" for key, n in counts.items()))


def init_app(app: Flask) -> None:
    app.cli.add_command(datasets_cli)
