"""The signing official's console: their institution's profile, domains and identity-provider
mapping, members, requests to join, proposals awaiting endorsement, agreements to sign, and a
dashboard of its projects, GPU-hours and dataset grants."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Pages, navigation and template helpers."""
    from portal.console import permissions, views
    from portal.core import navigation
    from portal.core.navigation import NavItem
    from portal.core.web import register_template_helpers

    app.register_blueprint(views.bp)
    register_template_helpers(app, permissions)
    navigation.register(
        NavItem(
            "console.choose",
            "Signing official's console",
            permissions.can_open_consoles,
            order=21,
            group="Institutions",
        )
    )
