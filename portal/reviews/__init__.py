"""Peer review: the reviewer pool, conflicts of interest detected and declared, assignments,
reviews and the ranking that program staff (or a call's allocation committee) decide from."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Pages, mail kinds and reminder rules, template helpers, navigation and dashboard cards."""
    import portal.reviews.emails  # noqa: F401 - registers its mail kinds and reminder rule
    from portal.core.web import register_template_helpers
    from portal.reviews import permissions, views
    from portal.reviews import review_views as _routes  # noqa: F401 - adds its routes to bp

    app.register_blueprint(views.bp)
    register_template_helpers(app, permissions)
    views.register_ui(app)
