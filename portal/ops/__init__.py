"""Operating the portal in production: health and readiness checks for load balancers, metrics,
and the operator's commands (``flask --app portal check``, backups).

This package sits beside the domains, not in core: readiness reports the outbox
(``portal.notifications``) and the deployment check asks the identity providers (``portal.auth``).
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    from portal.ops import backup, check, health, metrics

    app.register_blueprint(health.bp)
    metrics.init_app(app)
    check.init_app(app)
    app.cli.add_command(backup.backup_cli)
