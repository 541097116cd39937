"""The operator API (``/api/v1/``, JSON for the clusters' schedulers) and the administrators'
pages for its tokens."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """The API blueprint (exempt from CSRF: it takes no cookies, only bearer tokens), the token
    pages, their navigation entry and template helpers."""
    from portal.api import api, permissions, token_views
    from portal.core import navigation
    from portal.core.navigation import NavItem
    from portal.core.web import register_template_helpers
    from portal.extensions import csrf

    csrf.exempt(api.bp)
    app.register_blueprint(api.bp)
    app.register_blueprint(token_views.bp)
    register_template_helpers(app, permissions)
    navigation.register(
        NavItem(
            "api_tokens.tokens",
            "API tokens",
            permissions.can_manage_tokens,
            order=87,
            group="Admin",
        )
    )
