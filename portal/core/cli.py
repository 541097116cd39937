"""``flask --app portal audit …``: the audit log's retention, and the grants of the two-role
PostgreSQL deployment (README, "Deploying on PostgreSQL with gunicorn")."""

from __future__ import annotations

import datetime as dt
import re

import click
from flask.cli import AppGroup
from sqlalchemy import text

from portal.core import audit
from portal.core.database import write_intent

audit_cli = AppGroup("audit", help="The audit log: retention and database grants.")

#: A PostgreSQL role name as the grants below accept it (no quoting games).
_ROLE = re.compile(r"[a-z_][a-z0-9_]{0,62}")


@audit_cli.command("prune-refusals")
@click.option(
    "--older-than-days",
    type=click.IntRange(min=1),
    default=180,
    show_default=True,
    help="Delete refused-request events older than this many days.",
)
def prune_refusals_command(older_than_days: int) -> None:
    """Delete old refused-request events (never changes: the database refuses that); the pruning
    itself is an audit event. Run it with the owner role's DATABASE_URL where the app role may
    not delete."""
    from portal.extensions import db

    with audit.origin(audit.Origin(channel="cli")), write_intent():
        deleted = audit.prune_refusals(db.session, older_than=dt.timedelta(days=older_than_days))
        audit.record(
            db.session,
            "audit.prune_refusals",
            actor=None,
            older_than_days=older_than_days,
            deleted=deleted,
        )
        db.session.commit()
    click.echo(f"Deleted {deleted} refused-request events older than {older_than_days} days.")


def app_role_grants(role: str) -> list[str]:
    """The statements that let ``role`` run the portal and nothing more: read and write every
    table, but only read and append the audit log (no UPDATE, DELETE or TRUNCATE there). Run by
    the role that owns the tables (the one migrations run as); triggers stay the owner's."""
    if not _ROLE.fullmatch(role):
        raise click.BadParameter("use a plain lower-case PostgreSQL role name")
    return [
        f"GRANT USAGE ON SCHEMA public TO {role}",
        f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}",
        f"REVOKE UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER ON audit_events FROM {role}",
        f"GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {role}",
    ]


@audit_cli.command("grant-app-role")
@click.argument("role")
@click.option("--print-only", is_flag=True, help="Print the statements instead of running them.")
def grant_app_role_command(role: str, print_only: bool) -> None:
    """Grant the application's database ROLE what it needs (PostgreSQL; run after each
    `flask db upgrade`, as the owner role)."""
    from portal.extensions import db

    statements = app_role_grants(role)
    if print_only:
        click.echo(";\n".join(statements) + ";")
        return
    if db.engine.dialect.name != "postgresql":
        raise click.UsageError("Roles and grants are a PostgreSQL deployment's; SQLite has none.")
    with db.engine.begin() as conn:
        for statement in statements:
            conn.execute(text(statement))
    click.echo(f"Granted {role} the application's rights; the audit log is append-only for it.")
