"""``make run``: a complete local portal from nothing.

Migrates the SQLite database in ``instance/``, loads the demo data on first start, and serves the
portal on http://127.0.0.1:5000 with Flask's development server. Press Ctrl+C to stop.
"""

from __future__ import annotations

import os
from urllib.parse import urlsplit

import click
from flask import Flask
from flask_migrate import upgrade
from werkzeug.serving import WSGIRequestHandler

HOST = "127.0.0.1"
#: The demo identity provider's issuer unless PORTAL_DEMO_OIDC_ISSUER says otherwise.
DEFAULT_DEMO_ISSUER = "http://127.0.0.1:9400"


class PortalRequestHandler(WSGIRequestHandler):
    """Werkzeug's handler without its version banner (``Server: Werkzeug/3.x Python/3.x``) and
    without its request lines: the portal logs each request itself (``portal.core.requestlog``)."""

    def version_string(self) -> str:
        return "ATOM Partner Portal"

    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        pass


PORT = int(os.environ.get("PORTAL_PORT", "5000"))


def demo_idp_address(app: Flask) -> tuple[str, int]:
    """Where the demo identity provider listens: the host and port of ``DEMO_OIDC_ISSUER``."""
    parts = urlsplit(demo_issuer_of(app))
    if parts.scheme != "http" or not parts.hostname:
        raise click.UsageError("PORTAL_DEMO_OIDC_ISSUER must be an http:// URL with a host.")
    return parts.hostname, parts.port or 80


def demo_issuer_of(app: Flask) -> str:
    return str(app.config.get("DEMO_OIDC_ISSUER", DEFAULT_DEMO_ISSUER))


def main() -> None:
    os.environ.setdefault("PORTAL_ENV", "development")
    os.environ.setdefault("PORTAL_DEMO_MODE", "true")
    # The demo identity provider accepts any client secret; a real one comes from the environment.
    os.environ.setdefault("PORTAL_OIDC_SECRET_DEMO", "demo-secret-not-for-production")
    # Mail goes to a local SMTP sink (portal/dev/sink.py); nothing leaves the machine.
    os.environ.setdefault("PORTAL_MAIL_SERVER", "127.0.0.1")
    os.environ.setdefault("PORTAL_MAIL_PORT", os.environ.get("PORTAL_MAIL_SINK_PORT", "8025"))
    os.environ.setdefault("PORTAL_MAIL_WORKER_INTERVAL", "2")
    os.environ.setdefault("PORTAL_BASE_URL", f"http://{HOST}:{PORT}")
    from portal import create_app
    from portal.auth.cli import seed_from_config
    from portal.dev.demo import PENDING_REQUESTS, PEOPLE, load_if_empty
    from portal.dev.idp import start_demo_idp

    app = create_app()
    idp_host, idp_port = demo_idp_address(app)
    start_demo_idp(idp_host, idp_port)
    with app.app_context():
        upgrade()
        loaded = load_if_empty()
        seed_from_config()
    from portal.dev.mail import start_dev_mail

    mail = start_dev_mail(app)
    click.echo("")
    click.echo(f"  ATOM Partner Portal: http://{HOST}:{PORT}")
    click.echo("  Demo data " + ("loaded." if loaded else "was already there."))
    click.echo(f"  Demo identity provider: http://{idp_host}:{idp_port}")
    click.echo(f"  {mail.banner}")
    click.echo(
        "  Log in: 'Log in with your institution' → 'Demo identity provider' → a name below."
    )
    click.echo("  Demo people (log in as any of them):")
    for p in PEOPLE:
        roles = ", ".join(r.label for r, _ in p.roles) or p.about
        click.echo(f"    {p.sub:<18} {p.name:<18} {roles}")
    for p in PENDING_REQUESTS:
        click.echo(f"    {p.sub:<18} {p.name:<18} (no role yet: asked to join UNC Charlotte)")
    click.echo("")
    app.run(
        host=HOST, port=PORT, debug=False, use_reloader=False, request_handler=PortalRequestHandler
    )


if __name__ == "__main__":
    main()
