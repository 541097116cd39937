"""``flask auth …``: seed the identity-provider registry from configuration."""

from __future__ import annotations

import click
from flask import current_app
from flask.cli import AppGroup

from portal.auth import services
from portal.core import audit
from portal.core.database import write_intent
from portal.extensions import db

auth_cli = AppGroup("auth", help="Institutional login.")


def seed_from_config() -> int:
    """Create or update the providers listed in ``OIDC_PROVIDERS``; commits; returns how many."""
    configs = current_app.config.get("OIDC_PROVIDERS") or []
    if not configs:
        return 0
    with audit.origin(audit.Origin(channel="cli")), write_intent():
        saved = services.seed_providers(
            db.session, configs, allowed_algorithms=current_app.config["OIDC_ALLOWED_ALGORITHMS"]
        )
        db.session.commit()
    return len(saved)


@auth_cli.command("seed-providers")
def seed_providers_command() -> None:
    """Create or update identity providers from the OIDC_PROVIDERS setting."""
    n = seed_from_config()
    click.echo(f"{n} identity provider(s) created or updated from configuration.")
