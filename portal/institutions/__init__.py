"""Partner institutions, their e-mail domains, and who is affiliated with them."""

from __future__ import annotations

from typing import Any

from flask import Flask


def init_app(app: Flask) -> None:
    """Pages, navigation, dashboard cards, the start page's partner count, mail kinds."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import joinedload

    import portal.institutions.emails  # noqa: F401 - registers its mail kinds and reminder rules
    from portal.auth.permissions import is_staff
    from portal.core import navigation
    from portal.core.navigation import NavItem, Panel, Stat
    from portal.core.roles import Role, holds
    from portal.core.web import register_template_helpers
    from portal.extensions import db
    from portal.institutions import permissions
    from portal.institutions.affiliation_views import bp as affiliations_bp
    from portal.institutions.apply_views import bp as applications_bp
    from portal.institutions.models import (
        Affiliation,
        AffiliationState,
        Institution,
        InstitutionState,
    )
    from portal.institutions.views import bp

    app.register_blueprint(bp)
    app.register_blueprint(affiliations_bp)
    app.register_blueprint(applications_bp)
    register_template_helpers(app, permissions)
    navigation.register(
        NavItem(
            "institutions.index", "Institutions", lambda u: True, order=10, group="Institutions"
        )
    )
    navigation.register(
        NavItem(
            "affiliations.index", "Affiliations", lambda u: True, order=20, group="Institutions"
        )
    )
    # Program staff work the onboarding queue; everyone else may apply for their institution (the
    # apply page lists their own applications).
    navigation.register(
        NavItem("applications.queue", "Applications", is_staff, order=15, group="Institutions")
    )
    navigation.register(
        NavItem(
            "applications.new",
            "Apply",
            lambda u: permissions.can_apply(u) and not is_staff(u),
            order=25,
            group="Institutions",
        )
    )

    def my_affiliations(user: Any) -> dict[str, Any]:
        return {"affiliations": [a for a in user.affiliations if a.state != AffiliationState.ENDED]}

    def requests_to_decide(user: Any) -> dict[str, Any] | None:
        if not holds(user, Role.SIGNING_OFFICIAL, Role.PROGRAM_OFFICER):
            return None  # nobody else decides (permissions._decider): no need to ask
        waiting = db.session.scalars(
            permissions.decidable_affiliations(user)
            .where(Affiliation.state == AffiliationState.REQUESTED)
            .options(joinedload(Affiliation.user), joinedload(Affiliation.institution))
            .order_by(Affiliation.requested_at)
            .limit(10)
        ).all()
        return {"requests": waiting} if waiting else None

    def applications(user: Any) -> dict[str, Any] | None:
        """Staff: the applications on their way to partnership, longest waiting first (sent
        back for changes and approved ones too: they wait on the applicant or the agreement).
        Others: their own applications still open or awaiting the agreement, if any."""
        on_the_way = [
            InstitutionState.APPLIED,
            InstitutionState.UNDER_REVIEW,
            InstitutionState.CHANGES_REQUESTED,
            InstitutionState.APPROVED,
        ]
        staff = is_staff(user)
        stmt = permissions.visible_applications(user) if not staff else select(Institution)
        waiting = db.session.scalars(
            stmt.where(Institution.state.in_(on_the_way))
            .order_by(Institution.state_changed_at, Institution.id)
            .limit(10)
        ).all()
        if not staff and not waiting:
            return None
        return {"institutions": waiting, "staff": staff}

    navigation.register_panel(
        Panel("my_affiliations", "institutions/panels/affiliations.html", my_affiliations, 10)
    )
    navigation.register_panel(
        Panel("affiliation_requests", "institutions/panels/requests.html", requests_to_decide, 20)
    )
    navigation.register_panel(
        Panel("applications", "institutions/apply/_panel.html", applications, 30)
    )
    navigation.register_stat(
        Stat(
            "Partner institutions",
            lambda: db.session.scalar(
                select(func.count()).where(Institution.state == InstitutionState.PARTNER)
            ),
            order=10,
        )
    )
