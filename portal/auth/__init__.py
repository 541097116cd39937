"""People, their login identities and their roles; the administrators' pages."""

from __future__ import annotations

import datetime as dt
from typing import Any

from flask import Flask


def init_app(app: Flask) -> None:
    """Login handling, pages, navigation, the activity card, mail kinds and the ``auth`` CLI."""
    from sqlalchemy import select

    import portal.auth.emails  # noqa: F401 - registers its mail kinds
    from portal.auth import permissions
    from portal.auth.cli import auth_cli
    from portal.auth.sessions import load_user
    from portal.auth.views import admin_bp, bp
    from portal.core import navigation
    from portal.core.audit import AuditEvent
    from portal.core.navigation import NavItem, Panel
    from portal.core.web import register_template_helpers
    from portal.extensions import db, login_manager

    app.config["PERMANENT_SESSION_LIFETIME"] = dt.timedelta(
        hours=float(app.config["SESSION_ABSOLUTE_HOURS"])
    )
    login_manager.init_app(app)
    login_manager.session_protection = "basic"
    # A cookie is worth a user only while its server-side session lives (portal/auth/sessions.py).
    login_manager.user_loader(load_user)
    login_manager.login_view = "auth.login"

    app.register_blueprint(bp)
    app.register_blueprint(admin_bp)
    app.cli.add_command(auth_cli)
    register_template_helpers(app, permissions)
    for item in (
        NavItem(
            "auth.providers",
            "Identity providers",
            permissions.can_manage_identity_providers,
            order=80,
            group="Admin",
        ),
        NavItem("auth.users", "Users", permissions.can_manage_users, order=85, group="Admin"),
        NavItem(
            "admin.audit_log", "Audit log", permissions.can_view_audit_log, order=90, group="Admin"
        ),
    ):
        navigation.register(item)

    def recent_activity(user: Any) -> dict[str, Any] | None:
        if not permissions.can_view_audit_log(user):
            return None
        events = db.session.scalars(
            select(AuditEvent).order_by(AuditEvent.id.desc()).limit(8)
        ).all()
        return {"events": events} if events else None

    navigation.register_panel(
        Panel("recent_activity", "auth/panels/activity.html", recent_activity, 90)
    )
