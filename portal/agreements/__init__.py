"""Agreements: versioned templates (partnership, project contribution, data use), agreements
issued from them for a subject and signed by each party in turn, bound to the exact text by its
SHA-256, re-consent to newer versions, and the gates they open in other domains."""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Pages, mail kinds and reminder rule, template helpers, navigation and dashboard cards; the
    gates, page notices and follow-ups it adds to institutions and proposals."""
    import portal.agreements.emails  # noqa: F401 - registers its mail kinds and reminder rule
    from portal.agreements import gates, permissions, services, views
    from portal.agreements.models import SubjectType
    from portal.core import hooks
    from portal.core.web import register_template_helpers
    from portal.institutions.models import Institution
    from portal.proposals.models import Proposal

    app.register_blueprint(views.bp)
    register_template_helpers(app, permissions)
    views.register_ui(app)

    hooks.register_gate(gates.INSTITUTION_JOIN, gates.partnership_blocker)
    hooks.register_gate(gates.INSTITUTION_REINSTATE, gates.partnership_blocker)
    hooks.register_gate(gates.USE_COMPUTE, gates.compute_blocker)
    hooks.register_notice(Institution, gates.institution_notice)
    hooks.register_notice(Proposal, gates.project_notice)
    hooks.register_follow_up("institution.approve", services.issue_for_approved_institution)
    hooks.register_follow_up("agreement.complete", services.join_on_partnership_signed)
    hooks.register_follow_up("institution.withdraw", services.withdraw_for_ended_institution)
    permissions.SUBJECT_ENDED[SubjectType.INSTITUTION] = services.institution_ended
    hooks.register_follow_up("proposal.approve", services.issue_for_approved_project)
