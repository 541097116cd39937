"""Who may see and change institutions and affiliations."""

from __future__ import annotations

from typing import Any

from sqlalchemy import Select, false, or_, select

from portal.auth.models import Role, RoleGrant
from portal.core.permissions import as_user, is_staff
from portal.institutions.models import Affiliation, AffiliationState, Institution, InstitutionState

#: Actions only lab staff take; the rest (withdraw) the institution's signing official may take too.
STAFF_ACTIONS = frozenset({"start_review", "approve", "suspend", "reinstate"})


def visible_institutions(user: Any) -> Select[Institution]:
    """Institutions the user may see: partners to everyone logged in; all to staff; others to
    the people who hold a role at them or are affiliated with them."""
    q = select(Institution)
    u = as_user(user)
    if u is None:
        return q.where(false())
    if is_staff(u):
        return q
    own_roles = select(RoleGrant.institution_id).where(
        RoleGrant.user_id == u.id, RoleGrant.institution_id.is_not(None)
    )
    own_affiliations = select(Affiliation.institution_id).where(
        Affiliation.user_id == u.id,
        Affiliation.state.in_([AffiliationState.REQUESTED, AffiliationState.ACTIVE]),
    )
    return q.where(
        or_(
            Institution.state == InstitutionState.PARTNER,
            Institution.id.in_(own_roles),
            Institution.id.in_(own_affiliations),
        )
    )


def can_view_institution(user: Any, institution: Institution) -> bool:
    u = as_user(user)
    if u is None:
        return False
    if is_staff(u) or institution.state == InstitutionState.PARTNER:
        return True
    return institution.id in {g.institution_id for g in u.role_grants} or any(
        a.institution_id == institution.id
        and a.state in (AffiliationState.REQUESTED, AffiliationState.ACTIVE)
        for a in u.affiliations
    )


def can_transition_institution(user: Any, institution: Institution, action: str) -> bool:
    if is_staff(user):
        return True
    u = as_user(user)
    return (
        u is not None
        and action not in STAFF_ACTIONS
        and u.has_role(Role.SIGNING_OFFICIAL, institution)
    )


def can_register_institution(user: Any) -> bool:
    return is_staff(user)


def can_edit_institution(user: Any, institution: Institution) -> bool:
    u = as_user(user)
    return is_staff(u) or (u is not None and u.has_role(Role.SIGNING_OFFICIAL, institution))


def can_view_institution_history(user: Any, institution: Institution) -> bool:
    return can_edit_institution(user, institution)
