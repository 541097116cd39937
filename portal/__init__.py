"""ATOM Partner Portal: the application factory."""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import Any

from flask import Flask

PACKAGE = Path(__file__).resolve().parent


def asset_folder(name: str) -> Path:
    """Where ``templates`` or ``static`` are: inside the package when it is installed from a wheel
    (the build copies them there, see setup.py), else at the top of the checkout."""
    packaged = PACKAGE / name
    return packaged if packaged.is_dir() else PACKAGE.parent / name


def instance_folder() -> Path:
    """The instance folder (local configuration, the SQLite file, uploads): ``PORTAL_INSTANCE_PATH``,
    or ``instance`` in the working directory; never inside the installed package."""
    return Path(os.environ.get("PORTAL_INSTANCE_PATH") or "instance").resolve()


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the portal. ``config`` overrides every other source (used by tests)."""
    from portal import extensions
    from portal.config import load_config
    from portal.core import web
    from portal.core.cli import audit_cli
    from portal.core.database import configure_engine
    from portal.core.views import bp as core_bp

    app = Flask(
        __name__,
        instance_path=str(instance_folder()),
        instance_relative_config=True,
        template_folder=str(asset_folder("templates")),
        static_folder=str(asset_folder("static")),
    )
    load_config(app, config)
    if app.config["TRUSTED_PROXIES"]:
        from werkzeug.middleware.proxy_fix import ProxyFix

        n = int(app.config["TRUSTED_PROXIES"])
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]
    Path(app.instance_path).mkdir(parents=True, exist_ok=True)

    _import_models()
    extensions.db.init_app(app)
    with app.app_context():
        configure_engine(extensions.db.engine)
    extensions.migrate.init_app(
        app,
        extensions.db,
        directory=str(PACKAGE / "migrations"),
        render_as_batch=True,
    )
    extensions.csrf.init_app(app)
    extensions.limiter.init_app(app)
    web.init_app(app)
    app.register_blueprint(core_bp)
    app.cli.add_command(audit_cli)
    for name in DOMAINS:
        importlib.import_module(name).init_app(app)
    return app


#: The packages that make up the portal, each registering itself (``init_app``): its blueprints,
#: navigation, dashboard cards, mail kinds, CLI commands and template helpers. Order matters only
#: for the navigation's ties. ``portal.dev`` is demo and development code (see its docstring).
DOMAINS = (
    "portal.auth",
    "portal.institutions",
    "portal.notifications",
    "portal.proposals",
    "portal.reviews",
    "portal.agreements",
    "portal.allocations",
    "portal.datasets",
    "portal.outputs",
    "portal.console",
    "portal.public",
    "portal.api",
    "portal.ops",
    "portal.dev",
)


def _import_models() -> None:
    """Import every model module so the metadata (and Alembic's autogenerate) sees all tables."""
    import portal.agreements.models
    import portal.allocations.models
    import portal.api.models
    import portal.auth.models
    import portal.core.audit
    import portal.datasets.models
    import portal.institutions.models
    import portal.notifications.models
    import portal.outputs.models
    import portal.proposals.models
    import portal.reviews.models  # noqa: F401
