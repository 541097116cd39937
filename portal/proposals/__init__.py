"""Calls for proposals and research proposals: the GPU resources catalog, calls, proposals with
their team, requests, planned open outputs, versions and PDF attachments, and endorsement."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Pages, mail kinds, template helpers; navigation and dashboard cards (``register_ui``)."""
    import portal.proposals.emails  # noqa: F401 - registers its mail kinds
    from portal.core.web import register_template_helpers
    from portal.proposals import attachment_views, gates, permissions, team_views, views

    for blueprint in (views.bp, team_views.bp, attachment_views.bp):
        app.register_blueprint(blueprint)
    register_template_helpers(app, permissions)
    views.register_ui(app)
    gates.register()
