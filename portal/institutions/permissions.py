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


#: Institutions people may ask to join (a signing official is there to decide).
REQUESTABLE_STATES = frozenset(
    {InstitutionState.APPLIED, InstitutionState.UNDER_REVIEW, InstitutionState.PARTNER}
)


def can_request_affiliation(user: Any, institution: Institution) -> bool:
    u = as_user(user)
    return u is not None and institution.state in REQUESTABLE_STATES


def can_decide_affiliation(user: Any, affiliation: Affiliation) -> bool:
    """The institution's signing officials decide requests to join it (never their own)."""
    u = as_user(user)
    return (
        u is not None
        and affiliation.user_id != u.id
        and affiliation.institution_id in u.institution_ids_for(Role.SIGNING_OFFICIAL)
    )


def can_withdraw_affiliation_request(user: Any, affiliation: Affiliation) -> bool:
    u = as_user(user)
    return u is not None and affiliation.user_id == u.id


def decidable_affiliations(user: Any) -> Select[Affiliation]:
    """Affiliations the user decides on: those at institutions where they are signing official
    (the same rule as ``can_decide_affiliation``, as a list filter)."""
    q = select(Affiliation)
    u = as_user(user)
    if u is None:
        return q.where(false())
    official_of = u.institution_ids_for(Role.SIGNING_OFFICIAL)
    if not official_of:
        return q.where(false())
    return q.where(Affiliation.institution_id.in_(official_of), Affiliation.user_id != u.id)
