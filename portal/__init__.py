"""ATOM Partner Portal: the application factory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flask import Flask

ROOT = Path(__file__).resolve().parent.parent


def create_app(config: dict[str, Any] | None = None) -> Flask:
    """Build the portal. ``config`` overrides every other source (used by tests)."""
    from portal import extensions
    from portal.config import load_config
    from portal.core import web
    from portal.core.database import configure_engine

    app = Flask(
        __name__,
        instance_path=str(ROOT / "instance"),
        instance_relative_config=True,
        template_folder=str(ROOT / "templates"),
        static_folder=str(ROOT / "static"),
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
        directory=str(Path(__file__).parent / "migrations"),
        render_as_batch=True,
    )
    extensions.csrf.init_app(app)
    extensions.limiter.init_app(app)
    _init_login(app)
    web.init_app(app)
    _register_blueprints(app)
    _register_template_helpers(app)
    _register_cli(app)
    return app


def _import_models() -> None:
    """Import every model module so the metadata (and Alembic's autogenerate) sees all tables."""
    import portal.auth.models
    import portal.core.audit
    import portal.institutions.models
    import portal.notifications.models  # noqa: F401


def _init_login(app: Flask) -> None:
    from portal.auth.sessions import load_user
    from portal.extensions import login_manager

    login_manager.init_app(app)
    login_manager.session_protection = "basic"
    # A cookie is worth a user only while its server-side session lives (portal/auth/sessions.py).
    login_manager.user_loader(load_user)


def _register_blueprints(app: Flask) -> None:
    from portal.core.views import bp as core_bp
    from portal.institutions.views import bp as institutions_bp

    app.register_blueprint(core_bp)
    app.register_blueprint(institutions_bp)

    from portal.auth.views import bp as auth_bp
    from portal.auth.views import init_app as init_auth
    from portal.institutions.affiliation_views import bp as affiliations_bp

    app.register_blueprint(auth_bp)
    app.register_blueprint(affiliations_bp)
    init_auth(app)

    from portal.notifications import init_app as init_notifications

    init_notifications(app)


def _register_template_helpers(app: Flask) -> None:
    from flask_login import current_user

    from portal.auth import permissions as auth_permissions
    from portal.core import navigation
    from portal.core import permissions as core_permissions
    from portal.core.navigation import NavItem
    from portal.core.permissions import as_user, can_view_audit_log
    from portal.institutions import permissions as institution_permissions

    navigation.register(NavItem("core.dashboard", "Dashboard", lambda u: True, order=0))
    navigation.register(NavItem("institutions.index", "Institutions", lambda u: True, order=10))
    navigation.register(
        NavItem("core.audit_log", "Audit log", can_view_audit_log, order=90, group="Admin")
    )

    @app.context_processor
    def _permissions() -> dict[str, Any]:
        helpers = {
            name: getattr(mod, name)
            for mod in (core_permissions, institution_permissions, auth_permissions)
            for name in dir(mod)
            if name.startswith(("can_", "is_"))
        }
        return {
            "site_name": app.config["SITE_NAME"],
            "demo_mode": app.config["DEMO_MODE"],
            "nav_items": lambda: navigation.items_for(current_user),
            "url_endpoints": app.view_functions,
            "me": as_user(current_user),
            **helpers,
        }


def _register_cli(app: Flask) -> None:
    from portal.datagen import generate_command
    from portal.demo import demo_cli

    demo_cli.add_command(generate_command)
    app.cli.add_command(demo_cli)

    from portal.auth.cli import auth_cli

    app.cli.add_command(auth_cli)

    from portal.notifications.cli import mail_cli

    app.cli.add_command(mail_cli)
