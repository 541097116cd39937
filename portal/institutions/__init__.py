"""Partner institutions, their e-mail domains, and who is affiliated with them."""

from __future__ import annotations

from typing import Any

from flask import Flask


def init_app(app: Flask) -> None:
    """Pages, navigation, dashboard cards, the start page's partner count, mail kinds."""
    from sqlalchemy import func, select
    from sqlalchemy.orm import selectinload

    import portal.institutions.emails  # noqa: F401 - registers its mail kinds and reminder rules
    from portal.auth.permissions import is_staff
    from portal.core import navigation
    from portal.core.navigation import NavItem, Panel, Stat
    from portal.core.web import register_template_helpers
    from portal.extensions import db
    from portal.institutions import permissions
    from portal.institutions.affiliation_views import bp as affiliations_bp
    from portal.institutions.models import (
        Affiliation,
        AffiliationState,
        Institution,
        InstitutionState,
    )
    from portal.institutions.views import bp

    app.register_blueprint(bp)
    app.register_blueprint(affiliations_bp)
    register_template_helpers(app, permissions)
    navigation.register(NavItem("institutions.index", "Institutions", lambda u: True, order=10))
    navigation.register(NavItem("affiliations.index", "Affiliations", lambda u: True, order=20))

    def my_affiliations(user: Any) -> dict[str, Any]:
        return {"affiliations": [a for a in user.affiliations if a.state != AffiliationState.ENDED]}

    def requests_to_decide(user: Any) -> dict[str, Any] | None:
        waiting = db.session.scalars(
            permissions.decidable_affiliations(user)
            .where(Affiliation.state == AffiliationState.REQUESTED)
            .options(selectinload(Affiliation.user), selectinload(Affiliation.institution))
            .order_by(Affiliation.requested_at)
            .limit(10)
        ).all()
        return {"requests": waiting} if waiting else None

    def applications(user: Any) -> dict[str, Any] | None:
        if not is_staff(user):
            return None
        waiting = db.session.scalars(
            select(Institution)
            .where(Institution.state.in_([InstitutionState.APPLIED, InstitutionState.UNDER_REVIEW]))
            .order_by(Institution.state_changed_at)
            .limit(10)
        ).all()
        return {"institutions": waiting}

    navigation.register_panel(
        Panel("my_affiliations", "institutions/panels/affiliations.html", my_affiliations, 10)
    )
    navigation.register_panel(
        Panel("affiliation_requests", "institutions/panels/requests.html", requests_to_decide, 20)
    )
    navigation.register_panel(
        Panel("applications", "institutions/panels/applications.html", applications, 30)
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
