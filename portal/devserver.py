"""``make run``: a complete local portal from nothing.

Migrates the SQLite database in ``instance/``, loads the demo data on first start, and serves the
portal on http://127.0.0.1:5000 with Flask's development server. Press Ctrl+C to stop.
"""

from __future__ import annotations

import os

import click
from flask_migrate import upgrade

HOST = "127.0.0.1"
PORT = int(os.environ.get("PORTAL_PORT", "5000"))


def main() -> None:
    os.environ.setdefault("PORTAL_ENV", "development")
    os.environ.setdefault("PORTAL_DEMO_MODE", "true")
    from portal import create_app
    from portal.demo import PEOPLE, load_if_empty

    app = create_app()
    with app.app_context():
        upgrade()
        loaded = load_if_empty()
    click.echo("")
    click.echo(f"  ATOM Partner Portal: http://{HOST}:{PORT}")
    click.echo("  Demo data " + ("loaded." if loaded else "was already there."))
    click.echo("  Demo people (log in as any of them):")
    for p in PEOPLE:
        roles = ", ".join(r.label for r, _ in p.roles)
        click.echo(f"    {p.sub:<16} {p.name:<18} {roles}")
    click.echo("")
    app.run(host=HOST, port=PORT, debug=False, use_reloader=False)


if __name__ == "__main__":
    main()
