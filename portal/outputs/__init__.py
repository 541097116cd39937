"""Open outputs: what each project released (weights, code, datasets, papers) checked off against
the outputs its proposal planned, the final report due at its end, and openness scores."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Pages, mail kinds, the reminder sweep, template helpers, navigation and the dashboard card;
    the final report created when a proposal is approved; the section on a project's page."""
    import portal.outputs.emails  # noqa: F401 - registers its mail kinds
    from portal.core import hooks
    from portal.core.web import register_template_helpers
    from portal.outputs import cli, permissions, services, views

    app.register_blueprint(views.bp)
    cli.init_app(app)
    register_template_helpers(app, permissions)
    views.register_ui(app)
    hooks.register_follow_up("proposal.approve", services.on_proposal_approved)
