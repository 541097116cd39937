"""``flask --app portal mail …``: deliver the outbox, run the worker loop, reminders and digests."""

from __future__ import annotations

import contextlib
import signal
import threading
from types import FrameType

import click
from flask import current_app
from flask.cli import AppGroup
from sqlalchemy import func, select

from portal.core import audit
from portal.core.database import write_intent
from portal.extensions import db
from portal.notifications.delivery import DeliveryReport, deliver_pending
from portal.notifications.models import OutboxMessage, OutboxState
from portal.notifications.reminders import run_reminders
from portal.notifications.services import send_digests

mail_cli = AppGroup("mail", help="E-mail: deliver the outbox, reminders, digests.")


def _echo_report(report: DeliveryReport) -> None:
    click.echo(f"sent {report.sent}, will retry {report.failed}, dead {len(report.dead)}")
    if report.dead:
        rows = db.session.scalars(select(OutboxMessage).where(OutboxMessage.id.in_(report.dead)))
        for m in rows:
            click.echo(f"  DEAD #{m.id} to {m.to_addr} ({m.template}): {m.last_error}", err=True)


def deliver_once(limit: int | None = None) -> DeliveryReport:
    with audit.origin(audit.Origin(channel="worker")):
        try:
            return deliver_pending(db.session, limit=limit)
        finally:
            db.session.remove()


@mail_cli.command("deliver")
@click.option("--limit", type=click.IntRange(min=1), help="Send at most this many mails.")
def deliver_command(limit: int | None) -> None:
    """Send every mail that is due, once, and report (for cron or a one-off run)."""
    _echo_report(deliver_once(limit))
    dead_total = db.session.scalar(
        select(func.count()).where(OutboxMessage.state == OutboxState.DEAD)
    )
    if dead_total:
        click.echo(f"{dead_total} dead mail(s) in the outbox; see the admin Mail page.", err=True)


def run_worker(stop: threading.Event, interval: float) -> None:
    """Deliver, then sleep ``interval`` seconds, until ``stop`` is set (used by ``make run`` too)."""
    while not stop.is_set():
        try:
            report = deliver_once()
            if report.total:
                current_app.logger.info(
                    "mail: sent %s, retry %s, dead %s", report.sent, report.failed, len(report.dead)
                )
        except Exception:  # the loop must outlive a database hiccup; the next pass retries
            current_app.logger.exception("mail delivery pass failed")
        stop.wait(interval)


@mail_cli.command("worker")
@click.option("--interval", type=click.FloatRange(min=0.1), help="Seconds between passes.")
def worker_command(interval: float | None) -> None:
    """Deliver continuously until stopped (SIGTERM or Ctrl+C); safe to run several on PostgreSQL."""
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    every = interval or float(current_app.config["MAIL_WORKER_INTERVAL"])
    click.echo(f"mail worker: delivering every {every:g}s; Ctrl+C to stop")
    with contextlib.suppress(KeyboardInterrupt):
        run_worker(stop, every)


@mail_cli.command("reminders")
def reminders_command() -> None:
    """Send the scheduled reminders that are due (each once per period); run it from cron."""
    with audit.origin(audit.Origin(channel="cli")), write_intent():
        counts = run_reminders(db.session)
        db.session.commit()
    for key, n in counts.items():
        click.echo(f"{key}: {n} reminder(s)")
    if not counts:
        click.echo("no reminder rules registered")


@mail_cli.command("digest")
def digest_command() -> None:
    """Send each person one digest of the notifications they chose to get daily; run daily."""
    with audit.origin(audit.Origin(channel="cli")), write_intent():
        n = send_digests(db.session)
        db.session.commit()
    click.echo(f"{n} digest(s) queued; `mail deliver` or the worker sends them")
