"""GPU compute: allocations under a hard budget, activated when their gate opens, suspended with
their institution, charged with the clusters' usage, swept at their end."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Pages, CLI commands, mail kinds, template helpers, navigation; the follow-ups it adds to
    proposals (approval allocates), agreements (a signed contribution agreement activates) and
    institutions (suspension and reinstatement); the allocations section of the project page."""
    import portal.allocations.emails  # noqa: F401 - registers its mail kinds
    import portal.allocations.followup_views as followup_views  # requests, allocation reviewers
    from portal.allocations import cli, permissions, services, views
    from portal.core import hooks
    from portal.core.web import register_template_helpers

    app.register_blueprint(views.bp)
    cli.init_app(app)
    register_template_helpers(app, permissions)
    views.register_ui(app)

    hooks.register_follow_up("proposal.approve", services.on_proposal_approved)
    hooks.register_follow_up("agreement.complete", services.on_agreement_signed)
    hooks.register_follow_up("institution.suspend", services.on_institution_stopped)
    hooks.register_follow_up("institution.withdraw", services.on_institution_stopped)
    hooks.register_follow_up("institution.reinstate", services.on_institution_reinstated)

    app.register_blueprint(followup_views.bp)
    followup_views.register_ui(app)
