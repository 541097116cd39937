"""Demo and development code: demo data and the benchmark generator (``flask demo``), the
``make run`` server with its demo identity provider and mail sink, and the demo mailbox.

Installed with the ``demo`` extra (``pip install '.[demo]'``, which ``make run`` does); the modules
that need ``oidc-provider-mock`` or ``aiosmtpd`` import them only when they start them, so a
production install without the extra still has the ``demo`` commands' help and a 404 mailbox.
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """The ``demo`` CLI and the demo mailbox (a 404 outside demo mode)."""
    from portal.core import navigation
    from portal.core.navigation import NavItem
    from portal.dev.datagen import generate_command
    from portal.dev.demo import demo_cli
    from portal.dev.views import bp
    from portal.notifications.permissions import can_read_demo_mailbox

    if "generate" not in demo_cli.commands:
        demo_cli.add_command(generate_command)
    app.cli.add_command(demo_cli)
    app.register_blueprint(bp)
    navigation.register(
        NavItem("dev.mailbox", "Demo mailbox", can_read_demo_mailbox, order=85, group="Admin")
    )
