"""Datasets: the lab's catalog with access tiers (open, registered, controlled), stewards who
decide on access, requests, grants until a date that start when the data-use agreement is signed
(agreements engine), renewals, revocation, expiry, and who may use a dataset now (operators' API).
"""

from __future__ import annotations

from flask import Flask


def init_app(app: Flask) -> None:
    """Pages, CLI command, mail kinds, template helpers, navigation; dataset access as a subject
    of data-use agreements; the follow-ups it adds to agreements (signed: access starts; declined
    or withdrawn: it ends), institutions (suspension, reinstatement, withdrawal), affiliations and
    proposal teams (a person leaving), and proposals (pre-approval asked on submission, granted
    on approval); the datasets section of the proposal page."""
    import portal.datasets.emails  # noqa: F401 - registers its mail kinds
    from portal.agreements import permissions as agreement_permissions
    from portal.agreements import services as agreement_services
    from portal.agreements.models import SubjectType
    from portal.core import hooks
    from portal.core.web import register_template_helpers
    from portal.datasets import access_views, cli, permissions, services, views

    assert access_views.bp is views.bp  # its routes are on the datasets blueprint
    app.register_blueprint(views.bp)
    cli.init_app(app)
    register_template_helpers(app, permissions)
    views.register_ui(app)

    agreement_services.SUBJECT_LOADERS[SubjectType.DATASET_ACCESS] = services.load_grant_subject
    agreement_permissions.SUBJECT_ENDED[SubjectType.DATASET_ACCESS] = services.grant_ended

    hooks.register_follow_up("agreement.complete", services.on_agreement_complete)
    hooks.register_follow_up("agreement.decline", services.on_agreement_refused)
    hooks.register_follow_up("agreement.withdraw", services.on_agreement_refused)
    hooks.register_follow_up("institution.suspend", services.on_institution_suspended)
    hooks.register_follow_up("institution.withdraw", services.on_institution_withdrawn)
    hooks.register_follow_up("institution.reinstate", services.on_institution_reinstated)
    hooks.register_follow_up("affiliation.end", services.on_affiliation_ended)
    hooks.register_follow_up("proposal.remove_member", services.on_member_removed)
    hooks.register_follow_up("proposal.submit", services.on_proposal_submitted)
    hooks.register_follow_up("proposal.endorse", services.on_proposal_submitted)
    hooks.register_follow_up("proposal.approve", services.on_proposal_approved)
